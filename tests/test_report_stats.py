"""Tables that tell a gain from seed noise: every CI, test, corrected p, probability of improvement and MDE of the
report equals what scipy/statsmodels compute from the same per-run values (records written by the real writer)."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower
from test_report import make_record, save

from lai_bench.report import build_report
from lai_bench.report.plan import main as plan_main

RESNET = [74.0, 74.5, 75.1]  # best top-1 per seed 0, 1, 2
CLEAR = [77.2, 77.6, 78.1]  # DLA-L: a gain far above the noise (paired p ~ 0.0003)
BORDERLINE = [r + d for r, d in zip(RESNET, (1.0, 1.2, 0.6))]  # DIANet: raw p ~ 0.03, above 0.05 after Holm
NOISE = [r + d for r, d in zip(RESNET, (0.5, -0.4, 0.1))]  # RLA-Net: nothing
SE_TWO = [75.0, 75.6]  # SE: seeds 0 and 1 only, against ResNet's 3: Welch
PAPER_RESNET = 74.2  # inside ResNet's CI
PAPER_DLA = 79.5  # outside DLA-L's CI


def write_records(folder: Path, rows: dict[str, list[float]], seeds: dict[str, list[int]] | None = None,
                  **extra) -> None:
    """One completed record per method and seed (best top-1 as given, final 0.3 below)."""
    for method, values in rows.items():
        for seed, value in zip((seeds or {}).get(method, range(len(values))), values):
            save(folder, make_record(method, "cifar100", seed, (value, value - 0.3), **extra))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stats")
    write_records(root / "cifar", {"none": RESNET, "dla_l": CLEAR, "dianet": BORDERLINE, "rla": NOISE, "se": SE_TWO})
    paper = root / "paper.csv"
    paper.write_text("method,backbone,depth,dataset,metric,value,unit,source\n"
                     f"none,cifar,164,cifar100,top1,{PAPER_RESNET},%,a paper\n"
                     f"dla_l,cifar,164,cifar100,top1,{PAPER_DLA},%,a paper\n")
    out = root / "analysis"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_report([root / "cifar"], out, paper=paper)
    return out


def csv_row(out: Path, name: str, **match) -> pd.Series:
    frame = pd.read_csv(out / "tables" / f"{name}.csv")
    mask = np.logical_and.reduce([frame[k] == v for k, v in match.items()])
    assert mask.sum() == 1, match
    return frame[mask].iloc[0]


def md_line(out: Path, name: str, start: str) -> str:
    return next(line for line in (out / "tables" / f"{name}.md").read_text().splitlines() if line.startswith(start))


def test_every_mean_has_its_t_interval(report):
    for method, values in (("none", RESNET), ("dla_l", CLEAR), ("se", SE_TWO)):
        row = csv_row(report, "cifar", method=method)
        low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
        assert (row["top1_best_ci95_low"], row["top1_best_ci95_high"]) == pytest.approx((low, high))
        finals = [v - 0.3 for v in values]
        low, high = stats.t.interval(0.95, len(finals) - 1, loc=np.mean(finals), scale=stats.sem(finals))
        assert (row["top1_final_ci95_low"], row["top1_final_ci95_high"]) == pytest.approx((low, high))


def test_same_seeds_are_compared_paired(report):
    row = csv_row(report, "cifar", method="dla_l")
    test = stats.ttest_rel(CLEAR, RESNET)
    diff = np.subtract(CLEAR, RESNET)
    assert row["top1_best_gain"] == pytest.approx(np.mean(CLEAR) - np.mean(RESNET))
    assert row["top1_best_gain"] == pytest.approx(row["gain"])  # the one gain rule
    assert (row["top1_best_gain_ci95_low"], row["top1_best_gain_ci95_high"]) == pytest.approx(
        tuple(test.confidence_interval(0.95)))
    assert row["top1_best_gain_p_value"] == pytest.approx(test.pvalue)
    assert row["top1_best_gain_test"] == "paired" and row["baseline"] == "ResNet-164"
    assert row["top1_best_gain_prob_improve"] == 1.0
    effect = TTestPower().solve_power(effect_size=None, nobs=3, alpha=0.05, power=0.8, alternative="two-sided")
    assert row["top1_best_gain_mde"] == pytest.approx(effect * np.std(diff, ddof=1))


def test_different_seeds_are_compared_with_welch(report):
    row = csv_row(report, "cifar", method="se")
    test = stats.ttest_ind(SE_TWO, RESNET, equal_var=False)
    assert row["top1_best_gain_test"] == "welch"
    assert row["top1_best_gain_p_value"] == pytest.approx(test.pvalue)
    assert (row["top1_best_gain_ci95_low"], row["top1_best_gain_ci95_high"]) == pytest.approx(
        tuple(test.confidence_interval(0.95)))
    u = stats.mannwhitneyu(SE_TWO, RESNET, alternative="two-sided").statistic
    assert row["top1_best_gain_prob_improve"] == pytest.approx(u / 6)
    pooled = math.sqrt((np.var(SE_TWO, ddof=1) + 2 * np.var(RESNET, ddof=1)) / 3)
    effect = TTestIndPower().solve_power(effect_size=None, nobs1=2, ratio=1.5, alpha=0.05, power=0.8)
    assert row["top1_best_gain_mde"] == pytest.approx(effect * pooled)


def test_holm_corrects_across_the_table_and_a_borderline_gain_loses_its_mark(report):
    raw = {m: stats.ttest_rel(v, RESNET).pvalue for m, v in (("dla_l", CLEAR), ("dianet", BORDERLINE),
                                                               ("rla", NOISE))}
    raw["se"] = stats.ttest_ind(SE_TWO, RESNET, equal_var=False).pvalue
    assert 0.01 < raw["dianet"] < 0.05  # significant alone ...
    methods = list(raw)
    reject, corrected, _, _ = multipletests([raw[m] for m in methods], alpha=0.05, method="holm")
    for method, p, rejected in zip(methods, corrected, reject):
        row = csv_row(report, "cifar", method=method)
        assert row["top1_best_gain_p_holm"] == pytest.approx(p)
        assert bool(row["top1_best_gain_significant"]) == bool(rejected)
    assert csv_row(report, "cifar", method="dianet")["top1_best_gain_p_holm"] > 0.05  # ... not after Holm
    assert md_line(report, "cifar", "| DLA-L ").count("†") == 1
    assert "†" not in md_line(report, "cifar", "| DIANet ")
    half = (stats.ttest_rel(CLEAR, RESNET).confidence_interval(0.95).high
            - stats.ttest_rel(CLEAR, RESNET).confidence_interval(0.95).low) / 2
    assert f"+{np.mean(CLEAR) - np.mean(RESNET):.2f} ± {half:.2f}†" in md_line(report, "cifar", "| DLA-L ")


def test_the_published_number_is_checked_against_our_ci(report):
    assert csv_row(report, "cifar", method="none")["paper_top1_in_ci95"]  # 74.2 in [72.9, 76.2]
    assert not csv_row(report, "cifar", method="dla_l")["paper_top1_in_ci95"]  # 79.5 above [76.5, 78.8]
    assert f"{PAPER_RESNET:.2f} (in CI)" in md_line(report, "cifar", "| ResNet ")
    assert f"{PAPER_DLA:.2f} (out of CI)" in md_line(report, "cifar", "| DLA-L ")


def test_the_comparisons_table_shows_means_with_ci_tests_and_mde(report):
    table = pd.read_csv(report / "tables" / "comparisons.csv")
    assert set(table["label"]) == {"SE", "DIANet", "RLA-Net", "DLA-L"} and set(table["table"]) >= {"cifar"}
    line = md_line(report, "comparisons", "| cifar | DLA-L ")
    low, high = stats.t.interval(0.95, 2, loc=np.mean(CLEAR), scale=stats.sem(CLEAR))
    assert f"{np.mean(CLEAR):.2f} ± {(high - low) / 2:.2f}" in line and "| paired t |" in line
    assert "† " in line or "†|" in line.replace(" ", "")
    tex = (report / "tables" / "comparisons.tex").read_text()
    assert "\\dag{}" in tex and "$\\pm$" in tex


def test_one_seed_says_n_too_small_and_prints_no_ci_or_test(tmp_path):
    write_records(tmp_path / "one", {"none": RESNET[:1], "dla_l": CLEAR[:1]})
    build_report([tmp_path / "one"], tmp_path / "out")
    row = csv_row(tmp_path / "out", "cifar", method="dla_l")
    assert row["top1_best_gain"] == pytest.approx(CLEAR[0] - RESNET[0])
    assert row["top1_best_gain_test"] == "n too small"
    for column in ("top1_best_ci95_low", "top1_best_gain_ci95_low", "top1_best_gain_p_value", "top1_best_gain_mde",
                   "top1_best_gain_p_holm", "top1_best_gain_prob_improve"):
        assert pd.isna(row[column]), column
    assert "(n too small)" in md_line(tmp_path / "out", "cifar", "| DLA-L ")
    line = md_line(tmp_path / "out", "comparisons", "| cifar | DLA-L ")
    assert "n too small" in line and "±" not in line and not re.search(r"\| 0\.\d+ \|", line)


# ------------------------------------------------------------------ planning


def test_plan_answers_17_seeds_for_std_03_and_delta_03(capsys):
    assert plan_main(["--std", "0.3", "--delta", "0.3"]) == 0
    solved = TTestIndPower().solve_power(effect_size=0.3 / 0.3, nobs1=None, alpha=0.05, power=0.8, ratio=1.0)
    assert math.ceil(solved) == 17
    assert capsys.readouterr().out.strip().endswith(": 17")


def test_plan_states_its_assumed_std_and_resolves_a_grid(capsys):
    assert plan_main(["--grid", "variance"]) == 0
    out = capsys.readouterr().out
    assert "assumed 0.3 pp" in out
    effect = TTestIndPower().solve_power(effect_size=None, nobs1=10, alpha=0.05, power=0.8, ratio=1.0)
    assert f"1 configuration(s) with 10 seeds: smallest gain resolved {effect * 0.3:.2f} pp" in out


def test_plan_estimates_the_std_from_records(tmp_path, capsys):
    write_records(tmp_path / "r", {"none": RESNET, "dla_l": CLEAR, "se": SE_TWO})
    assert plan_main(["--results", str(tmp_path / "r"), "--delta", "0.5"]) == 0
    out = capsys.readouterr().out
    groups = [RESNET, CLEAR, SE_TWO]
    pooled = math.sqrt(sum((len(g) - 1) * np.var(g, ddof=1) for g in groups) / sum(len(g) - 1 for g in groups))
    assert f"std: {pooled:.3f} pp" in out
    n = TTestIndPower().solve_power(effect_size=0.5 / pooled, nobs1=None, alpha=0.05, power=0.8, ratio=1.0)
    assert out.strip().endswith(f": {math.ceil(n)}")


@pytest.mark.parametrize("args,message", [
    (["--std", "0", "--delta", "0.3"], "--std must be a positive number"),
    (["--std", "0.3"], "give --delta"),
    (["--delta", "0.3", "--grid", "nope"], "--grid: no grid 'nope'"),
    (["--delta", "0.3", "--results", "/no/such/folder"], "no such results folder"),
    (["--delta", "0.3", "--power", "1.5"], "--power must lie between 0 and 1"),
])
def test_plan_refuses_bad_input_with_one_line(args, message, capsys):
    assert plan_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ figures


def test_figures_draw_the_95_ci_and_say_so(tmp_path):
    from lai_bench.summary.aggregate import aggregate, build_frame, load_results, variant_labels
    from lai_bench.tasks.classification.figures import plot_curves, plot_tradeoff

    write_records(tmp_path, {"none": RESNET, "dla_l": CLEAR})
    records, _ = load_results([tmp_path])
    frame, config_cols = build_frame(records)
    agg = aggregate(frame, config_cols)
    fig = plot_tradeoff(agg, variant_labels(agg, config_cols), {}, "cifar100", "params")
    (ax,) = fig.axes
    thick = [c for c in ax.collections if max(c.get_linewidths()) >= 6]
    spans = sorted(tuple(sorted(seg[:, 1])) for c in thick for seg in c.get_segments())
    want = sorted(stats.t.interval(0.95, 2, loc=np.mean(v), scale=stats.sem(v)) for v in (RESNET, CLEAR))
    # element by element: pytest >= 9.2 refuses approx over nested tuples
    assert len(spans) == len(want) and all(got == pytest.approx(ci) for got, ci in zip(spans, want))
    assert "95 % CI of the mean" in fig._suptitle.get_text()
    labels = dict(zip(agg["config_key"], variant_labels(agg, config_cols)))
    curves = plot_curves(records, frame, labels, "cifar100")
    assert "band: its 95 % CI" in curves._suptitle.get_text()
    finals = [v - 0.3 for v in CLEAR]  # make_record: eval_top1 at the last epoch = final - 0.1 * seed
    last = [f - 0.1 * seed for seed, f in enumerate(finals)]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(last), scale=stats.sem(last))
    band = [p.vertices for c in curves.axes[0].collections for p in c.get_paths()]
    assert any(np.isclose(v[:, 1], high).any() and np.isclose(v[:, 1], low).any() for v in band)


# ------------------------------------------------------------------ a real smoke grid, end to end


def test_a_smoke_grid_with_three_seeds_reports_cis_tests_and_mde_and_one_seed_says_n_too_small(tmp_path):
    import json

    import yaml

    from lai_bench.launch.grid import read_grid
    from lai_bench.launch.launcher import launch
    from lai_bench.report import main

    base = {"backbone": "cifar", "depth": 8, "dataset": "synthetic", "recipe": "smoke", "epochs": 1,
            "batch_size": 8, "eval_batch_size": 16, "max_steps_per_epoch": 2, "measure": False,
            "synthetic": {"num_classes": 4, "image_size": 16, "train_size": 16, "eval_size": 32}}
    for name, seeds in (("three", [0, 1, 2]), ("one", [5])):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"name": name, "base": base, "grid": {"method": ["none", "se"],
                                                                              "seed": seeds}}))
        _, outcomes = launch(read_grid(path), tmp_path / name, "debug", log=lambda s: None)
        assert {o.status for o in outcomes} == {"completed"}
        assert main([str(tmp_path / name), "--out", str(tmp_path / f"{name}-out")]) == 0
    runs = [json.loads(p.read_text()) for p in (tmp_path / "three").rglob("*.json") if p.name != "jobs.json"]
    best = {m: {r["config"]["seed"]: r["metrics"]["top1_best"] for r in runs if r["config"]["method"] == m}
            for m in ("none", "se")}
    se, resnet = [best["se"][s] for s in range(3)], [best["none"][s] for s in range(3)]
    row = csv_row(tmp_path / "three-out", "all_runs", method="se")
    if np.ptp(np.subtract(se, resnet)) > 0:  # a spread of differences: a finite test
        test = stats.ttest_rel(se, resnet)
        assert row["top1_best_gain_p_value"] == pytest.approx(test.pvalue)
        assert row["top1_best_gain_p_holm"] == pytest.approx(test.pvalue)  # the table's only comparison
        assert row["top1_best_gain_ci95_low"] == pytest.approx(test.confidence_interval(0.95).low)
    assert row["top1_best_gain"] == pytest.approx(np.mean(se) - np.mean(resnet))
    assert row["top1_best_gain_test"] == "paired"
    line = md_line(tmp_path / "three-out", "comparisons", "| all_runs | SE ")
    assert line.count("±") >= 2 and "| paired t |" in line  # means and the gain with their CI half-widths
    columns = [c.strip() for c in md_line(tmp_path / "three-out", "comparisons", "| Table ").split("|")]
    assert {"p (Holm)", "P(improve)", "MDE (pp)"} <= set(columns)
    one = md_line(tmp_path / "one-out", "comparisons", "| all_runs | SE ")
    assert "n too small" in one and "±" not in one
    assert "(n too small)" in md_line(tmp_path / "one-out", "all_runs", "| SE ")


def test_the_ablation_compares_each_setting_with_the_default_dla_setting(tmp_path):
    default, lstm, gru = [77.0, 77.4, 77.9], [76.1, 76.9, 77.0], [76.5, 76.6, 77.6]
    for seed in range(3):
        save(tmp_path, make_record("dla_l", "cifar100", seed, (default[seed], default[seed]), grid="ablation_dsu"))
        for cell, values in (("lstm", lstm), ("gru", gru)):
            save(tmp_path, make_record("dla_l", "cifar100", seed, (values[seed], values[seed]), grid="ablation_dsu",
                                       opts={"cell": cell}, run_id=f"{cell}-{seed}"))
    build_report([tmp_path], tmp_path / "out")
    frame = pd.read_csv(tmp_path / "out" / "tables" / "ablation_dsu.csv")
    by_cell = {row["opt.cell"]: row for _, row in frame.iterrows()}
    assert pd.isna(by_cell["dsu"]["top1_best_gain"])  # the default is the baseline
    raw = [stats.ttest_rel(v, default).pvalue for v in (lstm, gru)]
    corrected = multipletests(raw, method="holm")[1]
    for (cell, values), p in zip((("lstm", lstm), ("gru", gru)), corrected):
        row = by_cell[cell]
        assert row["top1_best_gain"] == pytest.approx(np.mean(values) - np.mean(default))
        assert row["top1_best_gain_p_holm"] == pytest.approx(p) and row["top1_best_gain_test"] == "paired"
    header = md_line(tmp_path / "out", "ablation_dsu", "| Method")
    assert "Δ vs default (pp)" in header
