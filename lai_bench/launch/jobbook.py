"""<grid dir>/jobs.json: which job ran which run, and what the scheduler says of those jobs (squeue, sacct)."""
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..core.files import set_aside, write_text_atomic

# squeue's states of a job that is still to run or running: its run is live.
ALIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"})


class JobBook:
    """<grid dir>/jobs.json: run id -> the job that ran it, so --status can ask the scheduler."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "jobs.json"
        self.corrupt = False  # an unreadable jobs.json: read as empty, set aside by the next save
        self._answers: dict[tuple[str, ...], dict[str, str]] = {}  # command -> its answers, asked once (_ask_slurm)
        self._added: dict[str, dict[str, Any]] = {}  # this book's own submissions, merged into the file by save
        self.jobs = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            jobs = json.loads(self.path.read_text())
            if not isinstance(jobs, dict):
                raise ValueError("not a JSON object")
            return jobs
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            self.corrupt = True
            return {}

    def add(self, run_id: str, job_id: str, executor: str) -> None:
        self.jobs[run_id] = self._added[run_id] = {
            "job_id": job_id, "executor": executor, "submitted_at": datetime.now(UTC).isoformat(timespec="seconds")}

    def save(self) -> None:
        """Write this book's submissions over what the file holds now: another launcher of the grid may have
        written its own jobs since this book was read."""
        current = {} if self.corrupt else self._read()
        if self.corrupt and self.path.exists():
            set_aside(self.path)
        self.corrupt = False
        self.jobs = {**current, **self._added}
        write_text_atomic(self.path, json.dumps(self.jobs, indent=1))

    def _ask_slurm(self, command: list[str], sep: str | None = None) -> dict[str, str]:
        """Slurm job id -> the state a Slurm command (squeue, sacct) prints for it, for every Slurm job in the book,
        asked in one call per command and kept: a status of hundreds of runs does not start hundreds of commands."""
        key = tuple(command)
        if key not in self._answers:
            ids = sorted({job_id for run_id in self.jobs if (job_id := self.slurm_job(run_id))})
            self._answers[key] = {}
            if ids and shutil.which(command[0]) is not None:
                try:
                    out = subprocess.run([*command, "-j", ",".join(ids)], capture_output=True, text=True, timeout=30)
                except (OSError, subprocess.SubprocessError):
                    out = None
                for line in out.stdout.splitlines() if out else []:
                    fields = line.strip().split(sep)
                    if len(fields) >= 2 and fields[1].strip():
                        self._answers[key][fields[0]] = fields[1].split()[0]  # the last line of a job wins
        return self._answers[key]

    def slurm_job(self, run_id: str) -> str | None:
        """The id of the run's last Slurm job; None for a run the book has no Slurm job of."""
        job = self.jobs.get(run_id)
        known = isinstance(job, dict) and job.get("executor") == "slurm" and "job_id" in job
        return str(job["job_id"]) if known else None

    def _state(self, run_id: str, command: list[str], sep: str | None = None) -> str | None:
        job_id = self.slurm_job(run_id)
        return self._ask_slurm(command, sep).get(job_id) if job_id else None

    def slurm_state(self, run_id: str) -> str | None:
        """The scheduler's state of the run's last Slurm job (PENDING, RUNNING, ...), None if unknown."""
        return self._state(run_id, ["squeue", "-h", "-r", "-o", "%i %T"])

    def ended_state(self, run_id: str) -> str | None:
        """The accounting state of the run's last Slurm job once it has ended (CANCELLED, FAILED, ...), or None."""
        return self._state(run_id, ["sacct", "-n", "-X", "-P", "-o", "JobID,State"], sep="|")

    def cancelled(self, run_id: str) -> bool:
        """The run's last Slurm job was cancelled (scancel) and has ended."""
        return not self.alive(run_id) and (self.ended_state(run_id) or "").startswith("CANCELLED")

    def alive(self, run_id: str) -> bool:
        """The run's last Slurm job is still in the queue (pending, running, requeued, ...)."""
        return self.slurm_state(run_id) in ALIVE_STATES

