"""The `modern` grid's methods end to end: a one-seed slice of it (CIFAR ResNet-20 and a 2-block CIFAR ViT, every
method of the grid) runs through the local executor to records and a report where every method has its row and its
point in the accuracy-vs-cost figure, named by its registered display name."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_figures import legends

from lai_bench.launch.grid import read_grid
from lai_bench.models import display_name
from lai_bench.report.build import build_report
from lai_bench.summary.aggregate import aggregate, build_frame, load_results, variant_labels
from lai_bench.tasks.classification.figures import plot_tradeoff, with_real_methods

ROOT = Path(__file__).resolve().parent.parent
MODERN = ROOT / "experiments" / "modern.yaml"


def test_the_modern_grid_runs_every_method_on_both_backbones_except_what_a_backbone_rejects():
    grid = read_grid(MODERN)
    pairs = {(r.config.backbone, r.config.method) for r in grid.runs}
    methods = yaml.safe_load(MODERN.read_text())["grid"]["method"]
    assert {m for b, m in pairs if b == "cifar"} == set(methods)
    assert {m for b, m in pairs if b == "vit_cifar_tiny"} == set(methods) - {"se", "kcla"}
    assert {r.config.seed for r in grid.runs} == {0, 1, 2}
    assert {(r.config.backbone, r.config.recipe) for r in grid.runs} == {("cifar", "cifar"),
                                                                          ("vit_cifar_tiny", "vit_cifar")}


@pytest.fixture(scope="module")
def modern_slice(tmp_path_factory):
    """The grid with one seed, ResNet-20 and a 2-block ViT, run with --smoke through the local executor."""
    tmp = tmp_path_factory.mktemp("modern")
    data = yaml.safe_load(MODERN.read_text())
    data["grid"]["seed"] = [0]
    data["grid"]["model"] = [{"backbone": "cifar", "depth": 20, "recipe": "cifar"},
                             {"backbone": "vit_cifar_tiny", "depth": 2, "recipe": "vit_cifar"}]
    path = tmp / "modern.yaml"
    path.write_text(yaml.safe_dump(data))
    out = subprocess.run([sys.executable, "-m", "lai_bench.run", "--grid", str(path), "--smoke", "--executor", "local",
                          "--parallel", "2", "--results", str(tmp / "res")], capture_output=True, text=True,
                         timeout=900, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return tmp / "res" / "modern-smoke", data["grid"]["method"]


@pytest.mark.slow
def test_every_method_of_the_slice_completes_and_has_its_report_row_and_point(modern_slice, tmp_path):
    folder, methods = modern_slice
    records = [json.loads(p.read_text()) for p in folder.glob("*.json") if p.name != "jobs.json"]
    assert len(records) == 2 * len(methods) - 2
    assert {r["status"] for r in records} == {"completed"}
    build_report([folder], tmp_path / "out")
    runs = pd.read_csv(tmp_path / "out" / "tables" / "all_runs.csv")
    assert set(runs["method"]) == set(methods)
    report = (tmp_path / "out" / "report.md").read_text()
    vit_section = report.partition("**Vision Transformers")[2].partition("\n**")[0]
    for method in set(methods) - {"se", "kcla"}:
        assert f"| {display_name(method)} |" in vit_section or method == "none", method
    # The accuracy-vs-params figure has a point per configuration, each numbered and named in its legend.
    loaded, _ = load_results([folder])
    frame, config_cols = build_frame(loaded)
    agg = with_real_methods(aggregate(frame, config_cols))
    fig = plot_tradeoff(agg, variant_labels(agg, config_cols), {}, "synthetic", "params")
    legend = [text.get_text() for legend in legends(fig) for text in legend.get_texts()]
    names = {re.sub(r"^\d+:\s*", "", entry).split(",")[0].strip() for entry in legend}
    for method in methods:
        assert display_name(method) in names, (method, legend)
    numbers = [int(n) for ax in fig.axes for text in ax.texts for n in re.findall(r"\d+", text.get_text())]
    assert sorted(numbers) == list(range(1, len(agg) + 1))
