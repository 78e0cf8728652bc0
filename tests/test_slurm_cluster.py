"""End-to-end checks against a real Slurm cluster through submitit.

Needs the loopback cluster from ``scripts/slurm-local.sh start`` (or any
cluster named by $SLURM_CONF with a ``debug`` partition); skipped otherwise.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

try:  # tests/ as a plain directory (pytest's default rootdir import)
    from slurm_util import require_slurm
except ImportError:  # tests/ turned into a package
    from .slurm_util import require_slurm

submitit = pytest.importorskip("submitit")
cloudpickle = pytest.importorskip("cloudpickle")

pytestmark = pytest.mark.slurm

# The job process cannot import this test module by name (tests/ is not on its
# sys.path), so ship the module's functions and classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

JOB_WAIT_S = 120.0  # 20 tasks starting Python at once on a 2-core machine take a while


@pytest.fixture(autouse=True, scope="module")
def _slurm_cluster():
    require_slurm()


def _executor(folder: Path, timeout_min: int = 10):
    # submitit asks Slurm for USR2 90 s before the time limit: with 2 minutes, a task still starting after
    # 30 s (20 array tasks on 2 cores) died of that signal. Tests of preemption pass their own limit.
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(
        slurm_partition="debug",
        timeout_min=timeout_min,
        cpus_per_task=1,
        mem_gb=1,
        name="lai_bench_test",
    )
    return executor


def _wait_done(job, timeout_s: float = JOB_WAIT_S) -> None:
    """Bounded wait: job.result() alone would block forever on a lost job."""
    deadline = time.monotonic() + timeout_s
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id} not done after {timeout_s:.0f}s (state {job.state})")
        time.sleep(0.25)


def _sacct_state(job_id: str) -> str:
    proc = subprocess.run(
        ["sacct", "-j", job_id, "-n", "-X", "-P", "-o", "State"],
        capture_output=True,
        text=True,
        timeout=10,
        stdin=subprocess.DEVNULL,
    )
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _wait_sacct_state(job_id: str, wanted: str, timeout_s: float = 15.0) -> str:
    """sacct lags squeue by a second or two: poll until the final state shows."""
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        state = _sacct_state(job_id)
        if state.startswith(wanted):
            return state
        time.sleep(0.5)
    return state


# ---- functions that run inside the Slurm jobs ------------------------------


def add(a, b):
    return a + b


def square_with_task_id(x):
    import os

    return x * x, os.environ.get("SLURM_ARRAY_TASK_ID")


def explode(message):
    raise ValueError(message)


class CountingCheckpointable:
    """Counts its runs in a file; the first run waits to be preempted."""

    def __init__(self, counter_file: str):
        self.counter_file = counter_file

    def __call__(self, hold_s: float):
        path = Path(self.counter_file)
        runs = int(path.read_text()) + 1 if path.exists() else 1
        path.write_text(str(runs))
        if runs == 1:
            time.sleep(hold_s)  # the test interrupts us here
        return runs

    def checkpoint(self, *args, **kwargs):
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


# ---- tests -----------------------------------------------------------------


def test_round_trip_and_sacct(tmp_path):
    job = _executor(tmp_path).submit(add, 2, 40)
    _wait_done(job)
    assert job.result() == 42
    state = _wait_sacct_state(job.job_id, "COMPLETED")
    assert state == "COMPLETED", f"sacct state for job {job.job_id}: {state!r}"


def test_map_array_20_tasks(tmp_path):
    executor = _executor(tmp_path)
    executor.update_parameters(slurm_array_parallelism=20)
    xs = list(range(20))
    jobs = executor.map_array(square_with_task_id, xs)
    assert len(jobs) == 20
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1, "expected one array job"
    for job in jobs:
        _wait_done(job)
    results = [job.result() for job in jobs]
    assert [r[0] for r in results] == [x * x for x in xs]
    assert sorted(int(r[1]) for r in results) == xs


def test_failure_gives_traceback(tmp_path):
    job = _executor(tmp_path).submit(explode, "boom from slurm job")
    _wait_done(job)
    with pytest.raises(submitit.core.utils.FailedJobError) as excinfo:
        job.result()
    text = str(excinfo.value)
    assert "Traceback" in text
    assert "ValueError: boom from slurm job" in text
    assert _wait_sacct_state(job.job_id, "FAILED").startswith("FAILED")


def test_checkpoint_requeue_resumes(tmp_path):
    counter = tmp_path / "runs.txt"
    job = _executor(tmp_path / "jobs", timeout_min=3).submit(
        CountingCheckpointable(str(counter)), 90.0
    )
    deadline = time.monotonic() + 30
    while not (counter.exists() and counter.read_text().strip() == "1"):
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id} never started (state {job.state})")
        time.sleep(0.25)
    job._interrupt()  # simulated preemption: SIGTERM, then USR2 -> checkpoint + requeue
    _wait_done(job, timeout_s=60)
    assert job.result() == 2, "the requeued job should be its second run"
    assert counter.read_text().strip() == "2"
