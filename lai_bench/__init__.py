"""lai_bench: a layer-interaction ablation benchmark (Dynamic Layer Attention and its baselines)."""
import os

# OpenMP threads that wait by spinning starve each other on a shared or busy machine (login nodes, shared
# cluster nodes, CI): one conv took 64 ms instead of 1 ms under load. Passive waiting costs nothing when the
# machine is idle. It must be set before torch loads OpenMP, so it is set here, before any lai_bench module
# imports torch; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
