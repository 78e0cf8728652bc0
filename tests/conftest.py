"""Test-suite set-up shared by every test module."""
import os

# Before anything imports torch: OpenMP threads that spin starve each other on a busy machine (see lai_bench).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
