"""A researcher's own method, in their own folder, trains through a grid's `plugins:` without a fork of lai_bench:
the launcher and every job import it, the record names its file and version, and the report gives it a row."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lai_bench.launch.grid import GridError, expand
from lai_bench.records.store import load_records

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = '''"""A scalar gate per block: x_t = act(r_t * sigmoid(w_t) + s_t)."""
import torch
from torch import nn

from lai_bench.models import register_method
from lai_bench.models.interaction.base import GatedInteraction


@register_method("scalar_gate", display="Scalar gate", order=50, color="#000000")
class ScalarGate(GatedInteraction):
    def __init__(self, spec, **kw):
        super().__init__(spec, **kw)
        self.w = nn.Parameter(torch.zeros(spec.num_blocks))

    def gate(self, t, residual, state):
        return torch.sigmoid(self.w[t]).expand(residual.shape[0], self.spec.channels), state
'''


def write_plugin(folder: Path) -> Path:
    package = folder / "lab_methods"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(PLUGIN)
    return package / "__init__.py"


def test_an_unimportable_plugin_is_one_line_before_anything_is_validated():
    with pytest.raises(GridError, match=r"g: plugin 'no_such_lab' cannot be imported \(ModuleNotFoundError"):
        expand({"plugins": ["no_such_lab"], "base": {"method": "whatever_it_registers"}}, where="g")


@pytest.mark.slow
def test_a_plugin_method_trains_through_the_local_executor_to_records_and_a_report_row(tmp_path):
    plugin = write_plugin(tmp_path / "lab")
    grid = tmp_path / "lab.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "lab", "plugins": ["lab_methods"],
        "base": {"dataset": "synthetic", "synthetic": {"num_classes": 4, "image_size": 16, "train_size": 32,
                                                       "eval_size": 16},
                 "depth": 8, "recipe": "smoke", "batch_size": 16, "eval_batch_size": 16, "measure": False},
        "grid": {"method": ["none", "scalar_gate"]}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "lab"), os.environ.get("PYTHONPATH", "")])}
    results = tmp_path / "results"
    ran = subprocess.run([sys.executable, "-m", "lai_bench.run", "--grid", str(grid), "--executor", "local",
                          "--results", str(results)], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    records = {r["config"]["method"]: r for r in load_records(results / "lab")}
    assert set(records) == {"none", "scalar_gate"} and all(r["status"] == "completed" for r in records.values())
    named = records["scalar_gate"]["plugins"]
    assert [p["module"] for p in named] == ["lab_methods"] and named[0]["path"] == str(plugin.resolve())
    assert named[0]["commit"] is None and len(named[0]["sha256"]) == 64  # no git folder: the file's hash
    report = subprocess.run([sys.executable, "-m", "lai_bench.report", str(results), "--out", str(tmp_path / "an")],
                            capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert report.returncode == 0, report.stdout + report.stderr
    table = (tmp_path / "an" / "tables" / "all_runs.md").read_text()
    assert "Scalar gate" in table
