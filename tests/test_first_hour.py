"""A new user's first hour: data checked before a grid, a missing Slurm controller, readable help."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lai_bench.run", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env={**os.environ, **(env or {})})


def cifar_grid(tmp_path: Path) -> Path:
    data = {"name": "c", "base": {"dataset": "cifar100", "data_root": str(tmp_path / "no_data"), "depth": 20,
                                  "recipe": "smoke"},
            "grid": {"method": ["none", "se", "eca", "dla_l", "dla_b"], "seed": [0, 1]}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_grid_without_its_data_submits_nothing_and_says_so_once(tmp_path):
    out = run_cli("--grid", str(cifar_grid(tmp_path)), "--executor", "local", "--results", str(tmp_path / "res"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cifar100 not found at"), out.stderr
    assert "10 run(s) need it" in lines[0] and "and 7 more" in lines[0]
    assert not (tmp_path / "res").exists()


def test_smoke_runs_of_a_data_grid_need_no_data(tmp_path):
    out = run_cli("--grid", str(cifar_grid(tmp_path)), "--smoke", "--dry-run", "--results", str(tmp_path / "res"))
    assert out.returncode == 0, out.stderr


def test_executor_slurm_without_a_controller_is_one_line(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=none\nSlurmctldHost=nowhere.invalid\n")
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"name": "g", "base": {"dataset": "synthetic", "depth": 8, "recipe": "smoke"}}))
    out = run_cli("--grid", str(grid), "--executor", "slurm", "--results", str(tmp_path / "res"),
                  env={"SLURM_CONF": str(conf)})
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: --executor slurm, but no Slurm controller answers (sinfo failed or is not installed): start one "
        "(on this machine: bash scripts/slurm-local.sh start) or pass --executor local"]


def test_a_long_recipe_on_synthetic_data_is_warned_about(tmp_path):
    args = [sys.executable, "-m", "lai_bench.train", "--method", "none", "--depth", "8", "--dataset", "synthetic",
            "--recipe", "cifar", "--epochs", "11", "--max-steps-per-epoch", "1", "--max-eval-batches", "1",
            "--batch-size", "8", "--eval-batch-size", "8", "--no-measure", "--out", str(tmp_path),
            "--synthetic", "train_size=16", "--synthetic", "eval_size=8", "--synthetic", "image_size=16"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert "warning: 11 epochs of the 'cifar' recipe on synthetic data; for a quick check pass --recipe smoke" \
        in out.stderr


def test_threads_default_to_the_cpus_a_process_may_use(monkeypatch):
    from lai_bench.core.devices import cpu_threads, usable_cpus

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    cpus = len(os.sched_getaffinity(0))
    assert usable_cpus() == cpus
    assert cpu_threads(None) == cpus and cpu_threads(3) == 3
    assert cpu_threads(None, local_processes=cpus * 2) == 1  # DDP processes share the node's CPUs
    assert cpu_threads(None, current=1) == 1  # a caller that lowered the count keeps it
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "5")
    assert usable_cpus() == 5 and cpu_threads(None, local_processes=4) == 5  # Slurm gives each task its CPUs


def test_a_run_uses_its_threads_option_and_restores_the_callers(tmp_path):
    import torch

    from lai_bench.config import RunConfig
    from lai_bench.train.lifecycle import Run

    before = torch.get_num_threads()
    config = RunConfig(method="none", depth=8, dataset="synthetic", recipe="smoke", epochs=1, batch_size=8,
                       eval_batch_size=8, measure=False, threads=1,
                       synthetic={"num_classes": 2, "image_size": 8, "train_size": 16, "eval_size": 8})
    record = Run(config, tmp_path, log=lambda s: None).run()
    assert record["torch_threads"] == 1 and torch.get_num_threads() == before
    assert config.run_id() == RunConfig(**{**config.__dict__, "threads": None}).run_id()  # not part of the id


def test_smoke_runs_leave_no_checkpoints_behind(tmp_path):
    import json

    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"name": "g", "base": {"dataset": "synthetic", "depth": 8, "recipe": "smoke"},
                                    "grid": {"method": ["none", "se"]}}))
    out = run_cli("--grid", str(grid), "--smoke", "--executor", "local", "--results", str(tmp_path / "res"),
                  env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    folder = tmp_path / "res" / "g-smoke"
    records = [json.loads(p.read_text()) for p in folder.glob("*.json") if p.name != "jobs.json"]
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert all(r["weights"] is None for r in records)
    assert not [p for p in (folder / "checkpoints").glob("*") if p.is_file()]
