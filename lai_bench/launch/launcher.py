"""Executors: a grid's runs, locally or as Slurm job arrays through submitit; finished runs are skipped, and runs
that other live processes train are waited for (each run's state is decided in state.py).

Records live at <results>/<grid>/<run_id>.json, submitit's logs under <results>/<grid>/submitit/,
and <results>/<grid>/jobs.json remembers which job ran which run (jobbook.py).

A job may have several tasks (the slurm block's nodes x tasks_per_node, one task per GPU by default): submitit
runs the run in each, and they train it together with DistributedDataParallel (lai_bench.runtime.distributed).
"""
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from ..core.errors import error_line
from ..core.files import set_aside
from ..records.store import read_record
from ..tasks import task_class
from .grid import Grid, GridPoint, check_world, tasks_per_node
from .jobbook import JobBook
from .jobs import HeldPreemption, TrainJob, TrainSequence, summary  # noqa: F401  (HeldPreemption: its home before)
from .plan import Plan, grid_dir, make_plan  # noqa: F401  (grid_dir, make_plan: their home before)
from .state import grid_states, record_status

EXECUTORS = ("auto", "local", "slurm", "debug")


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



@dataclass
class Outcome:
    spec: GridPoint
    status: str
    detail: str = ""
    summary: dict[str, Any] | None = None


def submit(executor: submitit.AutoExecutor, kind: str, specs: list[GridPoint], out_dir: Path, grid_name: str,
           book: JobBook) -> list[tuple[GridPoint, Any]]:
    """All runs in one call: on Slurm one job array (map_array), never N sbatch calls."""
    task = TrainJob()
    configs = [s.config.to_dict() for s in specs]
    jobs = executor.map_array(task, configs, [str(out_dir)] * len(specs), [grid_name] * len(specs))
    for spec, job in zip(specs, jobs):
        book.add(spec.run_id, str(job.job_id), kind)
    book.save()
    return list(zip(specs, jobs))


def outcome_of(spec: GridPoint, job: Any, folder: Path) -> Outcome:
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
    if status == "busy":  # the lock's message names its holder
        detail = f"left alone: {error_line(result.get('detail') or 'another live process is training it')}"
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
            task = task_class(outcome.spec.config.task)
            line += f" {task.headline_label} {task.headline_values(outcome.summary['metrics'])[0]:.2f}"
        if outcome.detail:
            line += f": {outcome.detail}"
        if self.bar is not None:
            if outcome.status != "completed":
                self.bar.write(line)
            self.bar.update(1)
            self.bar.set_postfix(failed=self.failed)
        else:
            self.log(line)

    def say(self, line: str) -> None:
        """A line of the log that leaves the bar in place."""
        if self.bar is not None:
            self.bar.write(line)
        else:
            self.log(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


CANCELLED_DETAIL = "scancel; its last checkpoint is kept (--rerun-failed resumes)"


def wait(jobs: list[tuple[GridPoint, Any]], progress: ProgressBar, folder: Path, poll_s: float = 1.0,
         busy: list[GridPoint] | None = None) -> list[Outcome]:
    """Collect outcomes as jobs finish, reporting each at once. With a `busy` list, a job that found its run
    trained by another live process is put there instead of reported: the caller waits for that process."""
    pending, outcomes = list(jobs), []
    while pending:
        still = []
        for spec, job in pending:
            if job.done():
                state = str(getattr(job, "state", "")) if isinstance(job, submitit.SlurmJob) else ""
                if state.startswith("CANCELLED"):
                    outcome = Outcome(spec, "cancelled", CANCELLED_DETAIL)
                else:
                    outcome = outcome_of(spec, job, folder)
                if outcome.status == "busy" and busy is not None:
                    busy.append(spec)
                    continue
                outcomes.append(outcome)
                progress.finished(outcome)
            else:
                still.append((spec, job))
        pending = still
        if pending:
            time.sleep(poll_s)
    return outcomes


def wait_for_holders(specs: list[GridPoint], folder: Path, progress: ProgressBar, poll_s: float = 2.0,
                     remind_s: float = 60.0) -> tuple[list[Outcome], list[GridPoint]]:
    """Wait for runs that other live processes train, naming each one's holder (again every `remind_s`), and report
    each run as it ends. Returns the outcomes of the runs that ended (completed, failed, diverged, cancelled) and the
    runs a holder left unfinished (it died, or its job ended, before the run completed), for the caller to train."""
    ended: list[Outcome] = []
    left: list[GridPoint] = []
    pending, started, named_at = list(specs), time.monotonic(), None
    while pending:
        states = grid_states(folder, [spec.run_id for spec in pending])  # a fresh job book: new answers, new jobs
        live = [spec for spec in pending if states[spec.run_id].live]
        if live and (named_at is None or time.monotonic() - named_at >= remind_s):
            since = "" if named_at is None else f" ({(time.monotonic() - started) / 60:.0f} min so far)"
            progress.say(f"waiting for {len(live)} run(s) that other live processes train{since}:")
            for spec in live:
                progress.say(f"  {spec.name} ({spec.run_id}): {states[spec.run_id].describe()}")
            named_at = time.monotonic()
        for spec in pending:
            state = states[spec.run_id]
            if state.final:
                record = state.record or {}
                detail = {"failed": error_line(record.get("error") or "", limit=400),
                          "diverged": f"epoch {record.get('diverged_epoch')}",
                          "cancelled": CANCELLED_DETAIL}.get(state.state, "")
                outcome = Outcome(spec, state.state, detail, summary(record) if "name" in record else None)
                ended.append(outcome)
                progress.finished(outcome)
            elif not state.live:
                left.append(spec)
        pending = live
        if pending:
            time.sleep(poll_s)
    return ended, left


def set_aside_corrupt(specs: list[GridPoint], folder: Path, log: Callable[[str], None]) -> None:
    for spec in specs:
        path = folder / f"{spec.run_id}.json"
        if record_status(path) == "corrupt":
            log(f"warning: {path} is not a readable record: moved to {set_aside(path).name}; the run starts again")


def launch(grid: Grid, results: Path, kind: str, rerun_failed: bool = False, parallel: int = 1,
           wait_for_results: bool = True, log: Callable[[str], None] = print,
           poll_s: float = 2.0, plan: Plan | None = None) -> tuple[Plan, list[Outcome]]:
    """Plan, submit and (optionally) wait: for this launch's jobs, and for the runs other live processes train (a
    run whose holder ends without finishing it is then trained here). Local runs go `parallel` at a time; Slurm
    takes the whole array. With `wait_for_results` False, Slurm jobs are submitted and left, and runs that
    others train are left to them. `plan`: the launcher's plan when it made one to check the data (computed once)."""
    check_world(grid)  # again: the slurm block may have changed since the grid was read
    folder = grid_dir(results, grid)
    book = JobBook(folder)
    if book.corrupt:
        log(f"warning: {book.path} is corrupt: set aside, a new one is written")
    plan = plan or make_plan(grid, results, rerun_failed, book)
    for spec, why in plan.skip:
        log(f"skip {spec.name} ({spec.run_id}): {why}")
    held = plan.live() if wait_for_results else []
    if not plan.submit:
        log(f"nothing to submit: {len(plan.skip)} of {len(grid.runs)} runs need no job")
        if not held:
            return plan, []
    progress = ProgressBar(len(plan.submit) + len(held), log)
    outcomes: list[Outcome] = []
    todo = plan.submit
    try:
        while todo or held:
            if todo:
                busy: list[GridPoint] | None = [] if wait_for_results else None
                outcomes += run_jobs(todo, kind, grid, folder, book, progress, parallel, busy, log)
                held += busy or []
            todo = []
            if held:
                ended, todo = wait_for_holders(held, folder, progress, poll_s)
                outcomes += ended
                held = []
                if todo:  # counted in the progress already, as held runs
                    log(f"{len(todo)} run(s) left unfinished by their holder: this launch trains them")
    except KeyboardInterrupt:
        where = "they keep running on Slurm" if kind == "slurm" else "finished runs are kept"
        log(f"interrupted: {where}; run the same command again to resume the rest")
        raise
    finally:
        progress.close()
    return plan, outcomes


def run_jobs(specs: list[GridPoint], kind: str, grid: Grid, folder: Path, book: JobBook, progress: ProgressBar,
             parallel: int, busy: list[GridPoint] | None, log: Callable[[str], None]) -> list[Outcome]:
    """Submit `specs` and collect their outcomes. With a `busy` list the launch waits: runs whose job found them
    trained by another live process go there. Without one, Slurm jobs are left to run (local jobs are waited for
    all the same: they are this process's children)."""
    set_aside_corrupt(specs, folder, log)
    executor = make_executor(kind, folder / "submitit", grid.slurm)
    log(f"submitting {len(specs)} run(s) of grid {grid.name!r} to {kind} -> {folder}")
    if kind == "slurm":
        jobs = submit(executor, kind, specs, folder, grid.name, book)
        log(f"job array {str(jobs[0][1].job_id).split('_')[0]}: {len(jobs)} task(s); logs in {folder / 'submitit'}")
        return wait(jobs, progress, folder, busy=busy) if busy is not None else []
    if kind == "debug":
        return wait(submit(executor, kind, specs, folder, grid.name, book), progress, folder, busy=busy)
    # Local: `parallel` jobs at once, each training its share of the runs in turn (TrainSequence).
    shares = [specs[i::max(1, parallel)] for i in range(min(len(specs), max(1, parallel)))]
    before = {spec.run_id: _mtime(folder / f"{spec.run_id}.json") for spec in specs}
    jobs = executor.map_array(TrainSequence(), [[s.config.to_dict() for s in share] for share in shares],
                              [str(folder)] * len(shares), [grid.name] * len(shares))
    for share, job in zip(shares, jobs):
        for spec in share:
            book.add(spec.run_id, str(job.job_id), kind)
    book.save()
    return wait_sequences(list(zip(shares, jobs)), progress, folder, before, busy)


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def wait_sequences(jobs: list[tuple[list[GridPoint], Any]], progress: ProgressBar, folder: Path,
                   before: dict[str, int | None], busy: list[GridPoint] | None, poll_s: float = 1.0) -> list[Outcome]:
    """Outcomes of TrainSequence jobs: each run is reported as soon as its record is rewritten as final, the rest
    (busy runs, runs whose job died) when their job ends."""
    reported: set[str] = set()
    outcomes: list[Outcome] = []

    def report(outcome: Outcome) -> None:
        reported.add(outcome.spec.run_id)
        outcomes.append(outcome)
        progress.finished(outcome)

    pending = list(jobs)
    while pending:
        still = []
        for share, job in pending:
            done = job.done()  # asked first: every record a finished job wrote is on disk by then
            for spec in share:
                path = folder / f"{spec.run_id}.json"
                if spec.run_id in reported or _mtime(path) == before[spec.run_id]:
                    continue
                status = record_status(path)
                if status in ("completed", "failed", "diverged"):
                    record = read_record(path)
                    detail = {"failed": error_line(record.get("error") or "", limit=400),
                              "diverged": f"epoch {record.get('diverged_epoch')}"}.get(status, "")
                    report(Outcome(spec, status, detail, summary(record)))
            if not done:
                still.append((share, job))
                continue
            error = "the job ended without a result for this run"
            try:
                results = {r["run_id"]: r for r in job.results()[0]}
            except Exception as e:  # the job itself died (killed, out of memory): its unreported runs failed
                results, error = {}, f"{type(e).__name__}: {error_line(str(e))}"
            for spec in share:
                if spec.run_id in reported:
                    continue
                result = results.get(spec.run_id)
                if result is None:
                    log = getattr(job, "paths", None)
                    report(Outcome(spec, "failed", error + (f" (log: {log.stderr})" if log is not None else "")))
                elif result["status"] == "busy" and busy is not None:
                    busy.append(spec)
                elif result["status"] == "busy":
                    report(Outcome(spec, "busy", f"left alone: {error_line(result.get('detail') or '')}", result))
                else:
                    report(Outcome(spec, result["status"], result.get("detail") or "", result))
        pending = still
        if pending:
            time.sleep(poll_s)
    return outcomes
