"""lai_bench: a layer-interaction ablation benchmark (Dynamic Layer Attention and its baselines)."""
__version__ = "0.1.0"
