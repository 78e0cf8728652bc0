"""Test-suite set-up shared by every test module."""
import os

# Before anything imports torch: OpenMP threads that spin starve each other on a busy machine (see lai_bench).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Under pytest-xdist each worker gets its share of the CPUs (and the processes it starts inherit it): two workers
# of two threads each on two cores would only take turns.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _cpus // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import pytest  # noqa: E402


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`-n 2`, pyproject.toml) the Slurm tests share one worker: they queue on the one loopback
    node, and a test that checks which jobs it added must not see another test's. First, so that xdist's own hook,
    which reads the `xdist_group` marks, sees these."""
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))
