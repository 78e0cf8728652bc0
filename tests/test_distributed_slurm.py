"""Data-parallel runs on a real Slurm cluster (scripts/slurm-local.sh start): jobs of 2 tasks, one record per run,
preemption of a 2-task job resuming every rank from the checkpoint to the uninterrupted result."""
import json
import time
from pathlib import Path

import pytest
import yaml
from slurm_util import require_slurm

from lai_bench.config import RunConfig
from lai_bench.launch.grid import read_grid
from lai_bench.launch.launcher import JobBook, launch, make_executor, submit

pytestmark = pytest.mark.slurm
SLURM = {"partition": "debug", "tasks_per_node": 2, "cpus_per_task": 1, "mem_gb": 1, "time_min": 20}
# 13 eval samples: odd, so the two ranks' shards differ (7 and 6).
TINY = {"method": "none", "depth": 8, "dataset": "synthetic", "recipe": "smoke", "epochs": 1, "batch_size": 8,
        "eval_batch_size": 4, "measure": False, "device": "cpu",
        "synthetic": {"num_classes": 3, "image_size": 16, "train_size": 32, "eval_size": 13}}


@pytest.fixture(autouse=True, scope="module")
def cluster():
    require_slurm()


def grid_file(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"slurm": SLURM, **data}))
    return path


def records(folder: Path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json") if p.name != "jobs.json"}


def wait_for_epoch(record_path: Path, epoch: int, timeout_s: float = 300) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if record_path.exists():
            record = json.loads(record_path.read_text())
            if record["epochs_completed"] >= epoch:
                return record
        time.sleep(0.2)
    raise AssertionError(f"{record_path}: epoch {epoch} not recorded within {timeout_s:.0f}s")


def test_an_array_of_two_task_jobs_trains_each_run_with_two_processes_and_one_record(tmp_path):
    # Two runs: one job array of two jobs, each of two tasks (srun inside sbatch), on one node: their
    # rendezvous ports must differ (submitit derives each from its job id).
    path = grid_file(tmp_path, {"name": "ddp", "base": TINY, "grid": {"seed": [0, 1]}})
    plan, outcomes = launch(read_grid(path), tmp_path / "res", "slurm", log=lambda s: None)
    assert len(plan.submit) == 2 and [o.status for o in outcomes] == ["completed", "completed"], outcomes
    folder = tmp_path / "res" / "ddp"
    got = records(folder)
    assert len(got) == 2
    for record in got.values():
        assert record["status"] == "completed" and len(record["history"]) == 1
        assert (record["world_size"], record["batch_per_process"], record["global_batch_size"]) == (2, 4, 8)
        assert record["backend"] == "gloo" and record["history"][0]["eval_samples"] == 13
    jobs = json.loads((folder / "jobs.json").read_text())
    assert len({j["job_id"].split("_")[0] for j in jobs.values()}) == 1 and all("_" in j["job_id"]
                                                                                  for j in jobs.values())
    for job in jobs.values():  # both tasks ran; rank 0 alone logged the epoch
        logs = {t: (folder / "submitit" / f"{job['job_id']}_{t}_log.out").read_text() for t in (0, 1)}
        assert "epoch 1/1" in logs[0] and "epoch 1/1" not in logs[1]
        assert "global_rank=1(2)" in logs[1]
    assert not list(folder.glob(".*.tmp"))


@pytest.mark.slow
def test_an_interrupted_two_task_job_resumes_every_rank_to_the_uninterrupted_result(tmp_path):
    config = RunConfig(**{**TINY, "epochs": 4, "drop_path": 0.1,
                          "synthetic": {**TINY["synthetic"], "train_size": 256}})  # 32 steps per epoch
    grid = read_grid(grid_file(tmp_path, {"name": "preempt", "base": config.to_dict()}))
    jobs = {}
    for name in ("reference", "cut"):  # the same run twice, side by side: left alone, and preempted
        folder = tmp_path / name
        executor = make_executor("slurm", folder / "submitit", grid.slurm)
        [(spec, job)] = submit(executor, "slurm", grid.runs, folder, grid.name, JobBook(folder))
        jobs[name] = (folder, spec, job)
    folder, spec, job = jobs["cut"]
    record_path = folder / f"{spec.run_id}.json"
    assert wait_for_epoch(record_path, 1)["status"] == "running"
    job._interrupt()  # preemption: SIGTERM then USR2 to both tasks; submitit requeues the job
    results = job.results()
    assert [r["status"] for r in results] == ["completed", "completed"]
    log = Path(job.task(0).paths.stdout).read_text()
    assert "stop requested: checkpoint at epoch" in log and "resumed from" in log, log[-3000:]
    record = json.loads(record_path.read_text())
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3, 4]
    ref_folder, _, ref_job = jobs["reference"]
    assert ref_job.results()[0]["status"] == "completed"
    reference = json.loads((ref_folder / f"{spec.run_id}.json").read_text())
    # Drop-path draws, the data order and every rank's RNG continue exactly: the same numbers as uninterrupted.
    for got, want in zip(record["history"], reference["history"]):
        for key in ("train_loss", "train_top1", "eval_top1", "eval_loss"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-8), key
