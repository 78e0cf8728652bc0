"""The ViT grids: `deit --dry-run` lists its runs, a method without a token form is refused before anything is
submitted, and a one-seed slice of `vit_cifar --smoke` runs every method through the local executor to records and a
report with the ViT table."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lai_bench.models import display_name

ROOT = Path(__file__).resolve().parent.parent
GRIDS = ROOT / "experiments"


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lai_bench.run", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_the_deit_grid_dry_run_lists_every_run_and_submits_nothing(tmp_path):
    out = run_cli("--grid", "deit", "--dry-run", "--results", str(tmp_path / "res"))
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.rstrip().endswith("submit")]
    assert len(rows) == 54
    for backbone in ("deit_tiny", "deit_small"):
        assert sum(f"backbone={backbone}," in row for row in rows) == (18 if backbone == "deit_tiny" else 36)
    assert sum("method=mrla_base, model_opts.drop_schedule=constant" in row for row in rows) == 6
    assert "would submit 54" in out.stdout and not (tmp_path / "res").exists()


def test_rla_on_a_vit_is_refused_before_anything_is_submitted(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"name": "g", "base": {"backbone": "vit_cifar_tiny", "dataset": "synthetic",
                                                          "recipe": "smoke"},
                                    "grid": {"method": ["none", "rla"]}}))
    out = run_cli("--grid", str(grid), "--executor", "local", "--results", str(tmp_path / "res"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "rla" in out.stderr and "tokens" in out.stderr, out.stderr
    assert not (tmp_path / "res").exists()


@pytest.mark.slow
def test_a_vit_cifar_smoke_slice_runs_every_method_to_records_and_the_vit_table(tmp_path):
    data = yaml.safe_load((GRIDS / "vit_cifar.yaml").read_text())
    data["base"]["depth"] = 2
    data["grid"]["seed"] = [0]
    grid = tmp_path / "vit_cifar.yaml"
    grid.write_text(yaml.safe_dump(data))
    out = run_cli("--grid", str(grid), "--smoke", "--executor", "local", "--parallel", "2",
                  "--results", str(tmp_path / "res"), timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    folder = tmp_path / "res" / "vit_cifar-smoke"
    records = [json.loads(p.read_text()) for p in folder.glob("*.json") if p.name != "jobs.json"]
    methods = data["grid"]["method"]
    assert sorted(r["config"]["method"] for r in records) == sorted(methods)
    assert {r["status"] for r in records} == {"completed"}
    report = subprocess.run([sys.executable, "-m", "lai_bench.report", str(folder), "--out", str(tmp_path / "an")],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "an" / "report.md").read_text()
    vit = text.partition("**Vision Transformers")[2].partition("\n**")[0]
    assert "| Method | Model | Dataset | Params (M) | FLOPs (G) |" in vit
    for method in methods:
        name = "ViT" if method == "none" else display_name(method)
        assert f"| {name} | ViT-T/2 |" in vit, (method, vit)
