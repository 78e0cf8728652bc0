"""One state per run (state.py): the launcher's plan, --status and the final table say the same thing for every
combination of record (completed, failed, diverged, running, corrupt, missing), lock (held by a live process or not)
and the run's last Slurm job (none, pending, running, cancelled; on the loopback cluster, never mocked)."""
import itertools
import os
import socket
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from lai_bench.launch.grid import read_grid
from lai_bench.launch.jobbook import JobBook
from lai_bench.launch.launcher import make_plan
from lai_bench.records.store import SCHEMA, write_record
from lai_bench.run import main, print_results
from lai_bench.train.runlock import RunLock

RECORDS = ("completed", "failed", "diverged", "running", "corrupt", "missing")
HOLDER = f"pid {os.getpid()} on host {socket.gethostname()}"


def expected(record: str, locked: bool, slurm: str | None) -> tuple[str, bool, str]:
    """The documented precedence, written out: the word every view shows, whether the launcher submits the run,
    and what --status adds to say why."""
    if record == "completed":
        return "completed", False, ""
    if locked:
        return "running", False, f"a live process holds it): {HOLDER}"
    if slurm in ("pending", "running"):
        return slurm, False, "its Slurm job is in the queue): Slurm job"
    if record in ("failed", "diverged"):
        return record, False, ""
    if record == "corrupt":
        return "corrupt", True, "not a readable record"
    if slurm == "cancelled":
        return "cancelled", False, "scancel"
    if record == "running":
        return "running", True, "no live job: rerun to resume"
    return "missing", True, ""


def make_grid(tmp_path: Path, n: int):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "base": {"depth": 20, "dataset": "synthetic", "recipe": "smoke",
                                                          "epochs": 1, "measure": False},
                                    "grid": {"seed": list(range(n))}}))
    return path, read_grid(path)


def write_state(record_path: Path, spec, record: str) -> None:
    if record == "missing":
        return
    if record == "corrupt":
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text('{"schema": "lai_bench.record/1", "run_id": "x", "sta')  # a write cut short
        return
    write_record(record_path, {
        "schema": SCHEMA, "run_id": spec.run_id, "name": spec.name, "grid": "g", "status": record,
        "config": spec.config.to_dict(), "params": 272_000, "diverged_epoch": 1 if record == "diverged" else None,
        "error": "ValueError: boom" if record == "failed" else None,
        "metrics": {"top1_final": 61.5, "top1_best": 62.0} if record != "diverged" else {}})


def views(grid_path: Path, grid, results: Path, capsys) -> tuple:
    """What the plan, --status and the final table say of each run."""
    plan = make_plan(grid, results)
    assert main(["--grid", str(grid_path), "--status", "--results", str(results)]) == 0
    status = capsys.readouterr().out.splitlines()
    counts = status[0]
    described = {line.split()[0]: line.split(None, 2)[2] for line in status[1:]}
    print_results(grid, results)
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["run", "status"])
    table = {line.split()[0]: line.split()[1:] for line in lines[header + 1:] if line.strip()}
    return plan, counts, described, table


def check_every_view(combos, grid_path, grid, results, capsys, job_ids=None) -> None:
    plan, counts, described, table = views(grid_path, grid, results, capsys)
    submitted = {spec.run_id for spec in plan.submit}
    reasons = dict((spec.run_id, why) for spec, why in plan.skip)
    words = []
    for spec, (record, locked, slurm) in zip(grid.runs, combos):
        word, submit, why = expected(record, locked, slurm)
        words.append(word)
        case = f"record {record}, lock {'held' if locked else 'free'}, Slurm job {slurm}"
        assert (spec.run_id in submitted) == submit, case
        if not submit:
            assert reasons[spec.run_id].split()[0] == word, (case, reasons[spec.run_id])
        assert described[spec.run_id].split()[0] == word and why in described[spec.run_id], (case, described)
        if slurm in ("pending", "running") and record != "completed":  # the job is named, with or without a lock
            assert f"Slurm job {job_ids[slurm]}" in described[spec.run_id], case
        assert table[spec.name][0] == word, (case, table[spec.name])
        final = ["61.50", "62.00"] if word == "completed" else ["-", "-"]  # only a completed run's metrics are final
        assert table[spec.name][1:3] == final, (case, table[spec.name])
    tally = {w: 0 for w in ("completed", "running", "cancelled", "failed", "diverged", "corrupt", "missing")}
    for word in words:
        tally[word if word in tally else "running"] += 1  # a pending run counts as running
    assert counts.endswith(": " + ", ".join(f"{n} {w}" for w, n in tally.items())), counts


def set_up(combos, grid, results: Path, locks: ExitStack, job_ids=None) -> None:
    folder = results / "g"
    book = JobBook(folder)
    for spec, (record, locked, slurm) in zip(grid.runs, combos):
        path = folder / f"{spec.run_id}.json"
        write_state(path, spec, record)
        if locked:
            locks.enter_context(RunLock(path))  # this process is the live holder
        if slurm:
            book.add(spec.run_id, job_ids[slurm], "slurm")
    book.save()


def test_plan_status_and_final_table_agree_on_every_local_state(tmp_path, capsys):
    combos = [(record, locked, None) for record, locked in itertools.product(RECORDS, (False, True))]
    grid_path, grid = make_grid(tmp_path, len(combos))
    results = tmp_path / "results"
    with ExitStack() as locks:
        set_up(combos, grid, results, locks)
        check_every_view(combos, grid_path, grid, results, capsys)


def sbatch(*extra: str) -> str:
    command = ["sbatch", "--parsable", "-p", "debug", "-n", "1", "--mem=100M", "-t", "10", "-o", "/dev/null", *extra]
    return subprocess.run([*command, "--wrap", "sleep 300"], capture_output=True, text=True,
                          check=True).stdout.strip()


def wait_until(what: str, ask, want: str, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while not ask().startswith(want):
        assert time.time() < deadline, f"{what} never reached {want}"
        time.sleep(1)


@pytest.mark.slurm
def test_plan_status_and_final_table_agree_on_every_state_with_a_slurm_job(tmp_path, capsys):
    from slurm_util import require_slurm

    require_slurm()
    jobs = {"pending": sbatch("--hold"), "running": sbatch(), "cancelled": sbatch("--hold")}
    try:
        def queue_state(job_id):
            return lambda: subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                                          text=True).stdout.strip()

        wait_until("the running job", queue_state(jobs["running"]), "RUNNING")
        subprocess.run(["scancel", jobs["cancelled"]], check=True)
        wait_until("the cancelled job", lambda: subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "State", "-j", jobs["cancelled"]], capture_output=True,
            text=True).stdout.strip(), "CANCELLED")
        assert queue_state(jobs["pending"])() == "PENDING"
        combos = list(itertools.product(RECORDS, (False, True), ("pending", "running", "cancelled")))
        grid_path, grid = make_grid(tmp_path, len(combos))
        results = tmp_path / "results"
        with ExitStack() as locks:
            set_up(combos, grid, results, locks, jobs)
            check_every_view(combos, grid_path, grid, results, capsys, jobs)
    finally:
        subprocess.run(["scancel", *jobs.values()], capture_output=True)
