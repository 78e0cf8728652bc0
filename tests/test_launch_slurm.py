"""Grids on a real Slurm cluster (scripts/slurm-local.sh start): arrays, failures, preemption, re-runs."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from slurm_util import require_slurm

from lai_bench.config import RunConfig
from lai_bench.launch.grid import read_grid
from lai_bench.launch.launcher import JobBook, launch, make_executor, submit
from lai_bench.train.lifecycle import Run

pytestmark = pytest.mark.slurm
EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
TINY = {"depth": 8, "dataset": "synthetic", "recipe": "smoke", "epochs": 1, "batch_size": 8, "eval_batch_size": 8,
        "measure": False, "method": "none",
        "synthetic": {"num_classes": 3, "image_size": 16, "train_size": 16, "eval_size": 8}}
SLURM = {"partition": "debug", "cpus_per_task": 1, "mem_gb": 1, "time_min": 20}


@pytest.fixture(autouse=True, scope="module")
def cluster():
    require_slurm()


def queued_job_ids() -> set:
    """Job ids in the queue (an array's tasks count as its one array id, %F). Earlier tests' jobs may still be
    leaving the queue, so tests compare which ids are new (a submission adds one), never how many there are."""
    out = subprocess.run(["squeue", "-h", "-o", "%F"], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def grid_file(tmp_path: Path, data: dict, name: str = "g.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"slurm": SLURM, **data}))
    return path


def records(folder: Path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json") if p.name != "jobs.json"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lai_bench.run", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ})


@pytest.mark.slow
def test_the_smoke_grid_runs_as_one_array_and_rerunning_submits_nothing(tmp_path):
    results = tmp_path / "res"
    done = run_cli("--grid", str(EXPERIMENTS / "smoke.yaml"), "--executor", "slurm", "--partition", "debug",
                   "--results", str(results))
    assert done.returncode == 0, done.stdout + done.stderr
    got = records(results / "smoke")
    assert len(got) == 10 and {r["status"] for r in got.values()} == {"completed"}
    assert {r["config"]["method"] for r in got.values()} == {"none", "se", "eca", "dianet", "mrla_light",
                                                           "mrla_base", "dense", "rla", "dla_l", "dla_b"}
    assert all(r["params"] > 0 and r["flops"] > 0 for r in got.values())
    jobs = json.loads((results / "smoke" / "jobs.json").read_text())
    array_ids = {j["job_id"].split("_")[0] for j in jobs.values()}
    assert len(array_ids) == 1 and all("_" in j["job_id"] for j in jobs.values())  # one array, not 10 sbatch

    before = queued_job_ids()
    again = run_cli("--grid", str(EXPERIMENTS / "smoke.yaml"), "--executor", "slurm", "--results", str(results))
    assert again.returncode == 0 and "nothing to submit: 10 of 10" in again.stdout
    assert not queued_job_ids() - before
    assert json.loads((results / "smoke" / "jobs.json").read_text()) == jobs


@pytest.mark.slow
def test_a_run_that_raises_is_recorded_failed_and_the_others_finish(tmp_path):
    path = grid_file(tmp_path, {"name": "mixed", "base": TINY,
                                "grid": {"variant": [{"seed": 0}, {"seed": 1}, {"batch_size": 64}]}})
    done = run_cli("--grid", str(path), "--executor", "slurm", "--results", str(tmp_path / "res"))
    assert done.returncode == 1
    assert "failed" in done.stdout and "smaller than one batch" in done.stdout
    got = records(tmp_path / "res" / "mixed")
    assert sorted(r["status"] for r in got.values()) == ["completed", "completed", "failed"]
    failed = next(r for r in got.values() if r["status"] == "failed")
    assert "Traceback (most recent call last)" in failed["error"] and "ValueError" in failed["error"]


@pytest.mark.slow
def test_a_second_launcher_waits_for_the_slurm_job_of_the_first_naming_it(tmp_path):
    """The first launcher submits and returns (--no-wait); the second finds the run's job in the queue, submits
    nothing, names the job, waits for it, and ends with the final table and exit 0."""
    from test_faults import final_table

    path = grid_file(tmp_path, {"name": "queued", "base": TINY})
    results = tmp_path / "res"
    # The job starts 20 s after submission (sbatch --begin): it is still in the queue when the second one looks.
    first = run_cli("--grid", str(path), "--executor", "slurm", "--results", str(results), "--no-wait",
                    "--sbatch", "begin=now+20")
    assert first.returncode == 0 and "submitted; watch with" in first.stdout, first.stdout + first.stderr
    [job] = json.loads((results / "queued" / "jobs.json").read_text()).values()
    second = run_cli("--grid", str(path), "--executor", "slurm", "--results", str(results))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing to submit" in second.stdout and "waiting for 1 run(s)" in second.stdout, second.stdout
    waiting = second.stdout.splitlines()[second.stdout.splitlines().index(
        "waiting for 1 run(s) that other live processes train:") + 1]
    assert waiting.endswith(f"pending (its Slurm job is in the queue): Slurm job {job['job_id']}"), second.stdout
    [record] = records(results / "queued").values()
    assert record["status"] == "completed" and final_table(second.stdout) == {record["name"]: "completed"}
    assert f"[1/1] completed {record['name']}" in second.stdout


@pytest.mark.slow
def test_twenty_concurrent_array_tasks_all_write_valid_records(tmp_path):
    path = grid_file(tmp_path, {"name": "twenty", "base": TINY, "grid": {"seed": list(range(20))},
                                "slurm": {**SLURM, "array_parallelism": 20}})
    plan, outcomes = launch(read_grid(path), tmp_path / "res", "slurm", log=lambda s: None)
    assert len(plan.submit) == 20 and [o.status for o in outcomes].count("completed") == 20
    got = records(tmp_path / "res" / "twenty")
    assert len(got) == 20
    for run_id, record in got.items():
        assert record["run_id"] == run_id and record["status"] == "completed"
        assert record["metrics"]["top1_final"] >= 0 and len(record["history"]) == 1
    assert not list((tmp_path / "res" / "twenty").glob(".*.tmp"))


def test_malformed_grid_exits_2_and_submits_no_job(tmp_path):
    before = queued_job_ids()
    path = grid_file(tmp_path, {"name": "bad", "base": {**TINY, "dpeth": 20}})
    done = run_cli("--grid", str(path), "--executor", "slurm", "--results", str(tmp_path / "res"))
    assert done.returncode == 2
    assert "unknown key 'dpeth'" in done.stderr and "did you mean 'depth'" in done.stderr and str(path) in done.stderr
    assert not queued_job_ids() - before and not (tmp_path / "res").exists()


@pytest.mark.slow
def test_a_preempted_training_job_resumes_from_its_checkpoint_to_the_same_result(tmp_path):
    config = RunConfig(**{**TINY, "depth": 20, "epochs": 4, "batch_size": 4, "drop_path": 0.1,
                          "synthetic": {"num_classes": 3, "image_size": 16, "train_size": 400, "eval_size": 16}})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the job (cpus_per_task 1): identical float reductions
    try:
        reference = Run(config, tmp_path / "reference", log=lambda s: None).run()
    finally:
        torch.set_num_threads(threads)
    grid = read_grid(grid_file(tmp_path, {"name": "preempt", "base": config.to_dict()}))
    folder = tmp_path / "res" / "preempt"
    executor = make_executor("slurm", folder / "submitit", grid.slurm)
    [(spec, job)] = submit(executor, "slurm", grid.runs, folder, grid.name, JobBook(folder))
    record_path = folder / f"{spec.run_id}.json"
    deadline = time.time() + 300
    while time.time() < deadline:  # wait for epoch 1's checkpoint and record
        if record_path.exists() and json.loads(record_path.read_text())["epochs_completed"] >= 1:
            break
        time.sleep(0.2)
    assert json.loads(record_path.read_text())["status"] == "running"
    job._interrupt()  # preemption: submitit checkpoints and requeues the job
    result = job.result()
    assert result["status"] == "completed"
    log = Path(job.paths.stdout).read_text()
    assert "resumed from" in log, log[-2000:]
    record = json.loads(record_path.read_text())
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3, 4]
    for got, want in zip(record["history"], reference["history"]):
        for key in ("train_loss", "train_top1", "eval_top1", "eval_loss"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-8), key


def test_the_job_book_asks_the_scheduler_once_for_all_its_runs(tmp_path, monkeypatch):
    """--status of hundreds of runs starts one squeue and one sacct, not one per run; states match each job."""
    shims = tmp_path / "bin"
    shims.mkdir()
    calls = tmp_path / "calls"
    for name in ("squeue", "sacct"):  # the real commands, each call logged
        real = subprocess.run(["which", name], capture_output=True, text=True, check=True).stdout.strip()
        (shims / name).write_text(f'#!/bin/sh\necho {name} >> "{calls}"\nexec "{real}" "$@"\n')
        (shims / name).chmod(0o755)
    sbatch = ["sbatch", "--parsable", "-p", "debug", "-n", "1", "--mem=100M", "-t", "5", "-o", "/dev/null"]
    held = subprocess.run([*sbatch, "--hold", "--wrap", "sleep 60"], capture_output=True, text=True, check=True)
    done = subprocess.run([*sbatch, "--wrap", "true"], capture_output=True, text=True, check=True)
    held_id, done_id = held.stdout.strip(), done.stdout.strip()
    try:
        book = JobBook(tmp_path)
        for run_id, job_id in (("held", held_id), ("done", done_id), ("local", "123")):
            book.add(run_id, job_id, "slurm" if run_id != "local" else "local")
        deadline = time.time() + 60
        while _ended(book, "done") != "COMPLETED":
            assert time.time() < deadline, "sacct never reported the finished job"
            time.sleep(1)
        monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
        fresh = JobBook(tmp_path)
        fresh.jobs = book.jobs
        assert fresh.slurm_state("held") == "PENDING" and fresh.alive("held")
        assert fresh.slurm_state("done") is None and not fresh.alive("done") and fresh.slurm_state("local") is None
        assert fresh.ended_state("done") == "COMPLETED" and fresh.ended_state("local") is None
        assert not fresh.cancelled("held") and not fresh.cancelled("done")
        assert calls.read_text().split() == ["squeue", "sacct"]
    finally:
        subprocess.run(["scancel", held_id, done_id], capture_output=True)


def _ended(book: JobBook, run_id: str) -> str:
    """The accounting state of a run's job, asked afresh."""
    fresh = JobBook(book.path.parent)
    fresh.jobs = book.jobs
    return fresh.ended_state(run_id) or ""
