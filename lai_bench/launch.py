"""Executors: a grid's runs, locally or as Slurm job arrays through submitit; finished runs are skipped.

Records live at <results>/<grid>/<run_id>.json, submitit's logs under <results>/<grid>/submitit/,
and <results>/<grid>/jobs.json remembers which job ran which run (for --status).

A job may have several tasks (the slurm block's nodes x tasks_per_node, one task per GPU by default): submitit
runs the run in each, and they train it together with DistributedDataParallel (lai_bench.distributed).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import submitit

from .errors import error_line
from .files import set_aside, write_text_atomic
from .grid import Grid, RunSpec, check_world, tasks_per_node
from .results import RecordError, read_record
from .runlock import RunBusy, is_running

EXECUTORS = ("auto", "local", "slurm", "debug")
FINISHED = ("completed", "failed", "diverged")


# submitit sends its timeout signal 90 s before the time limit: a held signal must reach submitit well before that.
PREEMPTION_GRACE_S = 60.0


class HeldPreemption:
    """Holds submitit's preemption/timeout signal (USR2) until the run has checkpointed at a step all ranks agree on.

    submitit's own handler requeues the job at once, on rank 0 only, wherever the signal lands: with several tasks
    the other ranks would then fail in their next all-reduce. Held, the signal only sets `stop`; the run's ranks
    agree to stop at the same step, rank 0 writes the checkpoint, and `requeue` hands the signal to submitit. If the
    run does not reach a step within `grace_s` (say a long eval), submitit gets it anyway and the run resumes
    from its last epoch checkpoint. Outside a submitit job (or off the main thread) it does nothing: `active` is False.
    """

    def __init__(self, grace_s: float = PREEMPTION_GRACE_S) -> None:
        from .train import StopFlag

        self.grace_s = grace_s
        self.signum = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
        self.submitit_handler = signal.getsignal(self.signum)
        self.active = callable(self.submitit_handler) and threading.current_thread() is threading.main_thread()
        # In a job, SIGTERM (scancel, Slurm's preemption and time-limit kill) also stops the run: it checkpoints
        # at the current step and exits within seconds instead of training on until Slurm's SIGKILL. Only the held
        # USR2 leads to a requeue; after a SIGTERM the job ends and the next launch resumes the run.
        self.stop = StopFlag(signals=(signal.SIGTERM,)) if self.active else StopFlag()
        self.held = False  # True once submitit's signal arrived
        self._alarm_handler: Any = None

    def __enter__(self) -> "HeldPreemption":
        if self.active:
            signal.signal(self.signum, self._hold)
            self._alarm_handler = signal.signal(signal.SIGALRM, lambda *_: self.requeue())
        return self

    def _hold(self, *_: Any) -> None:
        self.held = True
        self.stop.requested = True
        signal.setitimer(signal.ITIMER_REAL, self.grace_s)

    def requeue(self) -> None:
        """submitit's handler: on rank 0 it checkpoints the submission, requeues the job and exits; elsewhere no-op."""
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.submitit_handler(self.signum, None)

    def __exit__(self, *_: Any) -> None:
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(self.signum, self.submitit_handler)
            signal.signal(signal.SIGALRM, self._alarm_handler)


class RunTask(submitit.helpers.Checkpointable):
    """What one job (or each of its tasks) runs: a single run. On preemption or timeout the run stops at a step
    all its processes agree on, checkpoints, and submitit requeues the job with the same arguments
    (Checkpointable); every process then resumes from that checkpoint."""

    def __call__(self, config: dict[str, Any], out_dir: str, grid: str) -> dict[str, Any]:
        from .config import config_from_dict
        from .train import Interrupted, Run

        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:
            import torch

            torch.set_num_threads(int(cpus))
        with HeldPreemption() as held:
            run = Run(config_from_dict(config), out_dir, grid=grid, stop=held.stop)
            try:
                return summary(run.run())
            except RunBusy:  # another job or launcher trains it right now: not this job's failure
                return {"run_id": run.run_id, "name": run.config.name(), "status": "busy", "metrics": {}}
            except Interrupted:
                if not held.active:
                    raise
                if not held.held:  # SIGTERM: cancelled or killed by Slurm; the checkpoint is on disk
                    raise SystemExit(143) from None
                held.requeue()  # rank 0 leaves here (submitit exits after requeueing)
                # Other ranks leave without a result: an error result would read as the job's failure while the
                # requeued job is still to run.
                raise SystemExit(0)


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The small part of a record a job returns to the launcher."""
    return {"run_id": record["run_id"], "name": record["name"], "status": record["status"],
            "metrics": record.get("metrics", {}), "params": record.get("params"),
            "wall_time_s": record.get("wall_time_s"), "diverged_epoch": record.get("diverged_epoch")}


@dataclass
class Plan:
    """What a launch will do: runs to submit and runs left alone (with the reason)."""

    submit: list[RunSpec] = field(default_factory=list)
    skip: list[tuple[RunSpec, str]] = field(default_factory=list)


def grid_dir(results: Path, grid: Grid) -> Path:
    return Path(results) / grid.name


def record_status(path: Path) -> str | None:
    """The record's status; "corrupt" for a file that is not a readable record; None when there is no file."""
    try:
        return read_record(path).get("status")
    except FileNotFoundError:
        return None
    except (OSError, RecordError):
        return "corrupt"


def make_plan(grid: Grid, results: Path, rerun_failed: bool = False,
              alive: Callable[[str], bool] = lambda run_id: False,
              cancelled: Callable[[str], bool] = lambda run_id: False) -> Plan:
    """Completed runs are never resubmitted; failed/diverged only with `rerun_failed`; live runs are left alone
    (a live process holds the run's lock, or the scheduler still has its job); corrupt records are rerun."""
    plan, folder = Plan(), grid_dir(results, grid)
    for spec in grid.runs:
        path = folder / f"{spec.run_id}.json"
        status = record_status(path)
        if is_running(path):
            plan.skip.append((spec, "running (a live process holds it)"))
        elif status == "completed":
            plan.skip.append((spec, "completed"))
        elif status in ("failed", "diverged") and not rerun_failed:
            plan.skip.append((spec, f"{status} (use --rerun-failed to run it again)"))
        elif status in (None, "running") and not rerun_failed and cancelled(spec.run_id):
            plan.skip.append((spec, "cancelled (use --rerun-failed to resume it)"))
        elif alive(spec.run_id):
            plan.skip.append((spec, "running"))
        else:
            plan.submit.append(spec)
    return plan


def slurm_answers(timeout_s: float = 5.0) -> bool:
    """True when a Slurm controller answers (srun alone may be installed without a cluster)."""
    if shutil.which("srun") is None or shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=timeout_s).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def resolve_executor(kind: str, log: Callable[[str], None] = print) -> str:
    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor {kind!r}; allowed: {', '.join(EXECUTORS)}")
    if kind != "auto":
        return kind
    if shutil.which("srun") is None:
        return "local"
    if slurm_answers():
        return "slurm"
    log("srun is installed but no Slurm controller answers: running locally")
    return "local"


def local_tasks(slurm: dict[str, Any]) -> int:
    """Processes of a run on this machine: tasks_per_node if given, else one per requested GPU if the machine has
    them all, else one (a GPU grid tried out on a laptop runs as one process: the same global batch, slower)."""
    if slurm.get("tasks_per_node"):
        return slurm["tasks_per_node"]
    gpus = slurm.get("gpus_per_node") or 1
    if gpus > 1:
        import torch

        return gpus if torch.cuda.device_count() >= gpus else 1
    return 1


def make_executor(kind: str, folder: Path, slurm: dict[str, Any]) -> submitit.AutoExecutor:
    """submitit's executor for `kind` with the grid's resource options."""
    executor = submitit.AutoExecutor(folder=str(folder), cluster=kind)
    params: dict[str, Any] = {"name": "lai_bench", "timeout_min": slurm.get("time_min") or 60 * 24}
    if kind == "slurm":
        mapping = {"partition": "slurm_partition", "cpus_per_task": "cpus_per_task", "mem_gb": "mem_gb",
                   "gpus_per_node": "gpus_per_node", "array_parallelism": "slurm_array_parallelism",
                   "account": "slurm_account", "qos": "slurm_qos", "nodes": "nodes",
                   "constraint": "slurm_constraint"}
        params.update({mapping[k]: v for k, v in slurm.items() if k in mapping and v is not None})
        params["tasks_per_node"] = tasks_per_node(slurm)
        if slurm.get("sbatch"):
            params["slurm_additional_parameters"] = dict(slurm["sbatch"])
    elif kind == "local":
        params["tasks_per_node"] = local_tasks(slurm)
        if slurm.get("gpus_per_node"):
            params["gpus_per_node"] = slurm["gpus_per_node"]
    executor.update_parameters(**params)
    return executor


class JobBook:
    """<grid dir>/jobs.json: run id -> the job that ran it, so --status can ask the scheduler."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "jobs.json"
        self.jobs: dict[str, dict[str, Any]] = {}
        self.corrupt = False  # an unreadable jobs.json: read as empty, set aside by the next save
        self._answers: dict[tuple[str, ...], dict[str, str]] = {}  # command -> its answers, asked once (_ask_slurm)
        try:
            jobs = json.loads(self.path.read_text())
            if not isinstance(jobs, dict):
                raise ValueError("not a JSON object")
            self.jobs = jobs
        except FileNotFoundError:
            pass
        except (OSError, ValueError):
            self.corrupt = True

    def add(self, run_id: str, job_id: str, executor: str) -> None:
        self.jobs[run_id] = {"job_id": job_id, "executor": executor,
                             "submitted_at": datetime.now(UTC).isoformat(timespec="seconds")}

    def save(self) -> None:
        if self.corrupt and self.path.exists():
            set_aside(self.path)
            self.corrupt = False
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
        return self.slurm_state(run_id) in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING",
                                            "RESIZING", "SUSPENDED")


@dataclass
class Outcome:
    spec: RunSpec
    status: str
    detail: str = ""
    summary: dict[str, Any] | None = None


def submit(executor: submitit.AutoExecutor, kind: str, specs: list[RunSpec], out_dir: Path, grid_name: str,
           book: JobBook) -> list[tuple[RunSpec, Any]]:
    """All runs in one call: on Slurm one job array (map_array), never N sbatch calls."""
    task = RunTask()
    configs = [s.config.to_dict() for s in specs]
    jobs = executor.map_array(task, configs, [str(out_dir)] * len(specs), [grid_name] * len(specs))
    for spec, job in zip(specs, jobs):
        book.add(spec.run_id, str(job.job_id), kind)
    book.save()
    return list(zip(specs, jobs))


def outcome_of(spec: RunSpec, job: Any, folder: Path) -> Outcome:
    """The outcome of a finished job. A failed run's detail: the error line of its record, else (no readable
    failed record: the disk was full, say) the last `...Error: ...` line of the job's own exception text, not
    submitit's wrapper lines; then the job's log."""
    import re

    try:
        result = job.results()[0]  # a job of several tasks returns one result per task; rank 0's comes first
    except Exception as e:  # the run's record holds its traceback; submitit's error ends with the log path
        try:
            detail = error_line(read_record(folder / f"{spec.run_id}.json").get("error") or "", limit=400)
        except (OSError, ValueError):
            detail = ""
        if not detail:
            try:
                text = str(job.exception() or e)
            except Exception:  # the job's files may be unreadable too
                text = str(e)
            error = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception): \S")
            lines = [line.strip() for line in text.splitlines()
                     if error.match(line.strip()) and not line.strip().startswith("submitit.")]
            detail = error_line(lines[-1], limit=400) if lines else ""
        log = getattr(job, "paths", None)
        where = f" (log: {log.stderr})" if log is not None else ""
        return Outcome(spec, "failed", (detail or f"{type(e).__name__}: {error_line(str(e))}") + where)
    status = result["status"]
    detail = f"epoch {result['diverged_epoch']}" if status == "diverged" else ""
    if status == "busy":
        detail = "another live process is training it; left alone"
    return Outcome(spec, status, detail, result)


class ProgressBar:
    """A bar over the grid on a terminal, one line per finished run otherwise (logs)."""

    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.total, self.done, self.failed, self.log = total, 0, 0, log
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="runs", unit="run", dynamic_ncols=True)

    def finished(self, outcome: Outcome) -> None:
        self.done += 1
        self.failed += outcome.status != "completed"
        line = f"[{self.done}/{self.total}] {outcome.status:9s} {outcome.spec.name} ({outcome.spec.run_id})"
        if outcome.status == "completed" and outcome.summary and outcome.summary.get("metrics"):
            line += f" top1 {outcome.summary['metrics'].get('top1_final', float('nan')):.2f}"
        if outcome.detail:
            line += f": {outcome.detail}"
        if self.bar is not None:
            if outcome.status != "completed":
                self.bar.write(line)
            self.bar.update(1)
            self.bar.set_postfix(failed=self.failed)
        else:
            self.log(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def wait(jobs: list[tuple[RunSpec, Any]], progress: ProgressBar, folder: Path, poll_s: float = 1.0) -> list[Outcome]:
    """Collect outcomes as jobs finish, reporting each at once."""
    pending, outcomes = list(jobs), []
    while pending:
        still = []
        for spec, job in pending:
            if job.done():
                state = str(getattr(job, "state", "")) if isinstance(job, submitit.SlurmJob) else ""
                if state.startswith("CANCELLED"):
                    why = "scancel; its last checkpoint is kept (--rerun-failed resumes)"
                    outcome = Outcome(spec, "cancelled", why)
                else:
                    outcome = outcome_of(spec, job, folder)
                outcomes.append(outcome)
                progress.finished(outcome)
            else:
                still.append((spec, job))
        pending = still
        if pending:
            time.sleep(poll_s)
    return outcomes


def launch(grid: Grid, results: Path, kind: str, rerun_failed: bool = False, parallel: int = 1,
           wait_for_results: bool = True, log: Callable[[str], None] = print) -> tuple[Plan, list[Outcome]]:
    """Plan, submit and (optionally) wait. Local runs go `parallel` at a time; Slurm takes the whole array."""
    check_world(grid)  # again: the slurm block may have changed since the grid was read
    folder = grid_dir(results, grid)
    book = JobBook(folder)
    if book.corrupt:
        log(f"warning: {book.path} is corrupt: set aside, a new one is written")
    plan = make_plan(grid, results, rerun_failed, alive=book.alive, cancelled=book.cancelled)
    for spec, why in plan.skip:
        log(f"skip {spec.name} ({spec.run_id}): {why}")
    for spec in plan.submit:
        path = folder / f"{spec.run_id}.json"
        if record_status(path) == "corrupt":
            log(f"warning: {path} is not a readable record: moved to {set_aside(path).name}; the run starts again")
    if not plan.submit:
        log(f"nothing to submit: {len(plan.skip)} of {len(grid.runs)} runs need no job")
        return plan, []
    executor = make_executor(kind, folder / "submitit", grid.slurm)
    log(f"submitting {len(plan.submit)} run(s) of grid {grid.name!r} to {kind} -> {folder}")
    progress = ProgressBar(len(plan.submit), log)
    outcomes: list[Outcome] = []
    try:
        if kind == "slurm":
            jobs = submit(executor, kind, plan.submit, folder, grid.name, book)
            log(f"job array {str(jobs[0][1].job_id).split('_')[0]}: {len(jobs)} task(s); logs in {folder / 'submitit'}")
            if wait_for_results:
                outcomes = wait(jobs, progress, folder)
        else:
            step = max(1, parallel)
            for i in range(0, len(plan.submit), step):
                jobs = submit(executor, kind, plan.submit[i:i + step], folder, grid.name, book)
                outcomes += wait(jobs, progress, folder)
    except KeyboardInterrupt:
        where = "they keep running on Slurm" if kind == "slurm" else "finished runs are kept"
        log(f"interrupted: {where}; run the same command again to resume the rest")
        raise
    finally:
        progress.close()
    return plan, outcomes
