"""A run's state, decided in one place from its record, its lock and the scheduler's answer for its last job.

The launcher's plan, a waiting launcher, `--status` and the final table all ask `run_state`, so they never disagree.
The order of precedence: a completed record is final (it is never replaced). Else a live holder - a process that
holds the run's lock, or the run's Slurm job still in the queue - makes the run *live* whatever its record says (it
is being trained, resumed or rerun). Else the record's failed, diverged or corrupt; else a run whose last Slurm job
was cancelled is cancelled; else a record left `running` is *interrupted* (the next launch resumes it), and a run
with no record is missing.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..records.store import RecordError, read_record
from ..train.runlock import live_holder
from .jobbook import ALIVE_STATES, JobBook

STATES = ("completed", "live", "failed", "diverged", "cancelled", "corrupt", "interrupted", "missing")
# What --status counts, in its order: a live or interrupted run counts as running.
STATUS_WORDS = ("completed", "running", "cancelled", "failed", "diverged", "corrupt", "missing")
# Runs that end this way stay so until --rerun-failed: a waiting launcher reports them and does not retrain them.
RERUN_ONLY = ("failed", "diverged", "cancelled")
LOCK_HELD = "a live process holds it"
SLURM_QUEUED = "its Slurm job is in the queue"


@dataclass(frozen=True)
class RunState:
    state: str  # one of STATES
    lock_holder: str | None = None  # a live lock's holder: "pid 12 on host node3"
    job: str | None = None  # the run's Slurm job while it is in the queue, and squeue's state of it
    scheduler: str | None = None
    record: dict[str, Any] | None = None  # the readable record, if any

    @property
    def live(self) -> bool:
        return self.state == "live"

    @property
    def final(self) -> bool:
        """Nothing changes the run without a new launch: completed, or one of RERUN_ONLY."""
        return self.state == "completed" or self.state in RERUN_ONLY

    @property
    def holder(self) -> str:
        """Who trains a live run: the lock's holder and/or the Slurm job: ``pid 12 on host n3 (Slurm job 45_1)``."""
        job = f"Slurm job {self.job}" if self.job else ""
        return f"{self.lock_holder} ({job})" if self.lock_holder and job else self.lock_holder or job

    @property
    def word(self) -> str:
        """One word for counts and the final table: a live run is running, or its job's queue state (pending)."""
        if self.live and not self.lock_holder and self.scheduler not in ("RUNNING", "COMPLETING"):
            return self.scheduler.lower()
        return "running" if self.state in ("live", "interrupted") else self.state

    def describe(self) -> str:
        """The word and why, as --status prints it."""
        if self.live:
            return f"{self.word} ({LOCK_HELD if self.lock_holder else SLURM_QUEUED}): {self.holder}"
        return {"cancelled": "cancelled (scancel; --rerun-failed resumes it from its last checkpoint)",
                "corrupt": "corrupt (not a readable record: the next launch sets it aside and reruns the run)",
                "interrupted": "running (no live job: rerun to resume)"}.get(self.state, self.word)

    def to_submit(self, rerun_failed: bool) -> bool:
        """The launcher's decision: train it (again) now."""
        return self.state in ("corrupt", "interrupted", "missing") or (rerun_failed and self.state in RERUN_ONLY)

    def skip_reason(self) -> str:
        """Why the launcher leaves the run alone (when to_submit is False)."""
        if self.state in ("failed", "diverged"):
            return f"{self.state} (use --rerun-failed to run it again)"
        if self.state == "cancelled":
            return "cancelled (use --rerun-failed to resume it)"
        return self.describe()


def record_status(path: Path) -> str | None:
    """The record's status; "corrupt" for a file that is not a readable record; None when there is no file."""
    return _read(path)[1]


def _read(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        record = read_record(path)
    except FileNotFoundError:
        return None, None
    except (OSError, RecordError):
        return None, "corrupt"
    return record, record.get("status")


def run_state(record_path: Path, book: JobBook) -> RunState:
    """The state of the run whose record is (to be) at `record_path`; `book` gives its last Slurm job's state."""
    record, status = _read(record_path)
    if status == "completed":
        return RunState("completed", record=record)
    run_id = record_path.stem
    holder = live_holder(record_path)
    scheduler = book.slurm_state(run_id)
    queued = scheduler in ALIVE_STATES
    if holder or queued:
        return RunState("live", holder, book.slurm_job(run_id) if queued else None, scheduler if queued else None,
                        record)
    if status in ("failed", "diverged", "corrupt"):
        return RunState(status, record=record)
    if (book.ended_state(run_id) or "").startswith("CANCELLED"):
        return RunState("cancelled", record=record)
    return RunState("interrupted" if status == "running" else "missing", record=record)


def grid_states(folder: Path, run_ids: Iterable[str], book: JobBook | None = None) -> dict[str, RunState]:
    """run id -> its state, for the runs of one grid folder; the scheduler is asked once for all of them."""
    book = JobBook(folder) if book is None else book
    return {run_id: run_state(folder / f"{run_id}.json", book) for run_id in run_ids}
