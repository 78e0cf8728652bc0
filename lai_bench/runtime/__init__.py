"""What one run computes with, whatever its task: the DDP world (distributed), the training epoch, lr schedule and
seeds (engine), checkpoints and cost measurement (measure)."""
