"""Matched-cost controls: `controls: [params]` / `[flops]` adds, per method run, the plain CIFAR ResNet whose depth
gives the nearest count at or above the method's (checked against build_model), and the report shows them."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from test_report import make_record, save

from lai_bench.launch.grid import GridError, expand
from lai_bench.models import build_model
from lai_bench.report import build_report
from lai_bench.runtime.measure import count_flops

BASE = {"backbone": "cifar", "depth": 20, "dataset": "cifar100", "recipe": "cifar", "epochs": 2}


def params(method: str, depth: int, block: str = "basic", **opts) -> int:
    return sum(p.numel() for p in build_model(method, "cifar", depth, 100, block, **opts).parameters())


def flops(method: str, depth: int, block: str = "basic") -> int:
    torch.manual_seed(0)
    return count_flops(build_model(method, "cifar", depth, 100, block), (3, 32, 32)).total


def controls_of(grid) -> dict[tuple, int]:
    """(seed, matched) -> depth of the grid's control runs."""
    return {(r.config.seed, r.name.rsplit("-", 1)[-1]): r.config.depth for r in grid.runs if "matched" in r.name}


def test_controls_are_off_by_default():
    plain = expand({"base": BASE, "grid": {"method": ["none", "se"], "seed": [0, 1]}})
    assert [r.config.method for r in plain.runs] == ["none", "none", "se", "se"]
    assert all(r.config.depth == 20 for r in plain.runs)


def test_params_controls_have_the_nearest_count_at_or_above_the_methods():
    grid = expand({"base": BASE, "grid": {"method": ["none", "se", "dla_l"], "seed": [0, 1]},
                   "controls": ["params"]})
    controls = [r for r in grid.runs if r.name.endswith("params-matched")]
    assert controls and all(r.config.method == "none" and r.config.recipe == "cifar" for r in controls)
    assert {r.config.seed for r in controls} == {0, 1} and {r.config.dataset for r in controls} == {"cifar100"}
    for method in ("se", "dla_l"):
        target = params(method, 20)
        depth = next(d for d in range(20, 200, 6) if params("none", d) >= target)  # 6n+2, basic blocks
        assert params("none", depth - 6) < target <= params("none", depth)
        assert depth in {r.config.depth for r in controls}, (method, depth)
    assert len(grid.runs) == 6 + len(controls) and len({r.run_id for r in grid.runs}) == len(grid.runs)


def test_bottleneck_controls_step_by_nine():
    grid = expand({"base": {**BASE, "depth": 29, "block": "bottleneck"}, "grid": {"method": ["se"]},
                   "controls": ["params"]})
    (control,) = [r for r in grid.runs if r.config.method == "none"]
    target = params("se", 29, "bottleneck")
    assert (control.config.depth - 2) % 9 == 0 and control.config.block == "bottleneck"
    assert params("none", control.config.depth - 9, "bottleneck") < target <= params(
        "none", control.config.depth, "bottleneck")


def test_flops_controls_match_fvcore_counts():
    grid = expand({"base": BASE, "grid": {"method": ["dla_l"]}, "controls": ["flops"]})
    (control,) = [r for r in grid.runs if r.config.method == "none"]
    target, depth = flops("dla_l", 20), control.config.depth
    assert flops("none", depth - 6) < target <= flops("none", depth) and control.name.endswith("FLOPs-matched")


@pytest.mark.parametrize("data,message", [
    ({"base": {**BASE, "method": "se"}, "controls": ["cost"]}, "unknown kind(s) 'cost'; allowed: params, flops"),
    ({"base": {**BASE, "method": "se"}, "controls": {"params": True}}, "'controls' must be a list"),
    ({"base": {"backbone": "imagenet", "depth": 50, "dataset": "imagenet", "method": "se"}, "controls": ["params"]},
     "matched-cost controls are built for task classification on backbone cifar only"),
])
def test_a_bad_controls_key_is_one_clear_error(data, message):
    with pytest.raises(GridError, match="controls") as err:
        expand(data, where="g.yaml")
    assert message in str(err.value) and str(err.value).startswith("g.yaml: ")


# ------------------------------------------------------------------ the report

RESNET = [74.0, 74.5, 75.1]
RESNET_191 = [74.8, 75.0, 75.9]
SE = [75.4, 75.9, 76.1]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("controls")
    for seed in range(3):
        save(root, make_record("none", "cifar100", seed, (RESNET[seed], RESNET[seed])))
        save(root, make_record("se", "cifar100", seed, (SE[seed], SE[seed])))
        save(root, make_record("none", "cifar100", seed, (RESNET_191[seed], RESNET_191[seed]), depth=191,
                               params=1_950_000, flops=1_950_000 * 150))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_report([root], root / "out")
    return root / "out"


def test_the_report_shows_the_params_matched_row_beside_the_method_and_its_gain(report):
    md = (report / "tables" / "cifar.md").read_text().splitlines()
    rows = [line for line in md if line.startswith("| ") and not line.startswith("| Method") and "--" not in line[:8]]
    assert [r.split("|")[1].strip() for r in rows] == ["ResNet", "SE", "ResNet (params- and FLOPs-matched)"]
    assert "| ResNet-191 |" in rows[2]
    frame = pd.read_csv(report / "tables" / "cifar.csv")
    se = frame[frame["method"] == "se"].iloc[0]
    test = stats.ttest_rel(SE, RESNET_191)
    assert se["control_params"] == "ResNet-191 (params-matched)"
    assert se["top1_best_gain_params"] == pytest.approx(np.mean(SE) - np.mean(RESNET_191))
    assert se["top1_best_gain_params_p_value"] == pytest.approx(test.pvalue)
    assert (se["top1_best_gain_params_ci95_low"], se["top1_best_gain_params_ci95_high"]) == pytest.approx(
        tuple(test.confidence_interval(0.95)))
    assert se["top1_best_gain"] == pytest.approx(np.mean(SE) - np.mean(RESNET))  # the baseline stays ResNet-164
    header = next(line for line in md if line.startswith("| Method"))
    assert "Gain vs params-matched (pp)" in header and "Gain vs FLOPs-matched (pp)" in header
    half = (test.confidence_interval(0.95).high - test.confidence_interval(0.95).low) / 2
    assert f"+{np.mean(SE) - np.mean(RESNET_191):.2f} ± {half:.2f}" in rows[1]
