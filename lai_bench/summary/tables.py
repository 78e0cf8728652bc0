"""Tables: the Table every report part is made of, its cells (display text, best cells), notes and CSV rows, and
what a table of one seed or of synthetic data must say."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from .aggregate import TOP1_METRICS, variant_labels
from .compare import (
    STAT_COLUMNS,
    beside_methods,
    control_suffixes,
    default_baselines,
    gain_text,
    in_ci_text,
    matched_controls,
    resnet_baselines,
    with_comparisons,
)
from .display import (
    MISSING,
    finite,
    fmt_mean_std,
    fmt_number,
    one_seed,
)

# Columns read left to right as text (left-aligned); every other column is a number.
TEXT_COLUMNS = ("Method", "Model", "Dataset", "Grid", "Runs", "Init", "Table", "Against", "Test")


@dataclass
class Table:
    """A report table: display text per cell, its best cells (bold) and the numeric rows for its CSV.

    ``cells`` and ``best`` share their columns, ``(group, column)`` pairs with group "" when ungrouped."""

    name: str
    title: str
    notes: list[str]
    cells: pd.DataFrame
    best: pd.DataFrame
    data: pd.DataFrame = field(repr=False)
    head: str = ""  # the metric its comparisons are shown for (``top1_best``); "" when it compares nothing


# A display cell: (text, numeric value, "max" | "min" | None for which is best).
Cell = tuple[str, float, str | None]
Row = dict[tuple[str, str], Cell]


def _cell(text: str, value: Any = np.nan, better: str | None = None) -> Cell:
    """One display cell."""
    return (text, float(value) if finite(value) else np.nan, better)


def _assemble(name: str, title: str, notes: list[str], rows: list[Row], data: pd.DataFrame, head: str = "") -> Table:
    """Columns in order of first use, columns empty on every row dropped, the best value per column marked."""
    columns = pd.MultiIndex.from_tuples(list(dict.fromkeys(col for row in rows for col in row)))
    cells = pd.DataFrame([{col: text for col, (text, _, _) in row.items()} for row in rows], columns=columns)
    cells = cells.fillna(MISSING)
    cells = cells.loc[:, cells.ne(MISSING).any()]
    values = pd.DataFrame([{col: value for col, (_, value, _) in row.items()} for row in rows], columns=cells.columns)
    better: dict[tuple[str, str], str] = {}
    for row in rows:
        for col, (_, _, how) in row.items():
            if how:
                better.setdefault(col, how)
    return Table(name, title, notes, cells, _best_cells(values.astype(float), better), data, head)


def _best_cells(values: pd.DataFrame, better: dict[tuple[str, str], str]) -> pd.DataFrame:
    """True where a value is its column's highest (``max``) or lowest (``min``); none when all values are equal."""
    best = pd.DataFrame(False, index=values.index, columns=values.columns)
    for col in values.columns:
        column = values[col]
        if col not in better or column.nunique() < 2:
            continue
        target = column.max() if better[col] == "max" else column.min()
        best[col] = (column - target).abs() <= 1e-9 * max(1.0, abs(target))
    return best


def _notes(metric: str, paper: bool = True) -> list[str]:
    """Caption lines shared by the tables."""
    other = "final" if metric == "best" else "best"
    head = (
        "Headline: best-epoch top-1 (the DLA code reports the best test epoch, i.e. model selection on the test set); "
        "'final' = last epoch."
        if metric == "best"
        else "Headline: final-epoch top-1; 'best' = best test epoch (what the DLA code reports)."
    )
    notes = [
        head,
        f"Cells: mean ± sample std (ddof=1) over completed seeds of the {metric} and {other} top-1 (%); "
        "n = completed seeds / seeds in the grid.",
    ]
    if paper:
        notes.append(
            "Paper: published value (paper_results.csv), '(in CI)' when it lies inside our 95 % CI of the headline "
            "mean; Δ = ours (headline mean) − paper, in points. "
            "Gain = top-1 minus ResNet's at the same depth and recipe."
        )
    notes.append(STATS_NOTE)
    notes += [
        "Params in M (10⁶, exact count), FLOPs in G (10⁹, one multiply-add = one FLOP); "
        "samples/s: training throughput. Published costs may use other counters (see the CSV's source column).",
        "Bold: best per column (highest accuracy and samples/s, fewest params and FLOPs).",
    ]
    return notes


STATS_NOTE = (
    "Statistics (scipy/statsmodels): 95 % CIs are t intervals of the mean over seeds; a gain is shown as "
    "gain ± the half-width of its 95 % CI, from a paired t-test where both rows ran the same seeds (a seed fixes "
    "initialisation, data order and augmentation) and Welch's t-test otherwise; † marks a gain whose p-value, "
    "Holm-corrected across this table's comparisons of the metric, is below 0.05; 'n too small': fewer than 2 "
    "seeds a side, no CI or test. The CSV and comparisons table add p-values, probability of improvement and the "
    "minimum detectable effect (alpha 0.05, power 0.8)."
)


def _accuracy_cells(row: pd.Series, metric: str, group: str = "") -> Row:
    """Headline and other top-1 (mean ± std) and n."""
    other = "final" if metric == "best" else "best"
    n = int(row["n"])
    cells = {}
    for which in (metric, other):
        mean, std = row[f"top1_{which}_mean"], row[f"top1_{which}_std"]
        cells[(group, f"Top-1 {which} (%)")] = _cell(fmt_mean_std(mean, std, n), mean, "max")
    cells[(group, "n")] = _cell(f"{n}/{int(row['n_expected'])}")
    return cells


def _top5_cell(row: pd.Series, metric: str) -> Row:
    """Headline top-5 (mean ± std)."""
    top5, std5 = row[f"top5_{metric}_mean"], row[f"top5_{metric}_std"]
    return {("", f"Top-5 {metric} (%)"): _cell(fmt_mean_std(top5, std5, int(row["n"])), top5, "max")}


def _paper_cells(row: pd.Series, metric: str, group: str = "") -> Row:
    """Paper top-1 (in our CI or not), Δ, and the top-1 gain over ResNet (ours with its CI, and the paper's)."""
    paper = fmt_number(row["paper_top1"])
    return {
        (group, "Paper (%)"): _cell(paper + (in_ci_text(row, "top1") if paper != MISSING else "")),
        (group, "Δ (pp)"): _cell(fmt_number(row["delta_top1"], signed=True)),
        (group, "Gain (pp)"): _cell(gain_text(row, f"top1_{metric}_gain")),
        (group, "Paper gain (pp)"): _cell(fmt_number(row["paper_gain"], signed=True)),
        **_control_cells(row, metric, group),
    }


def _control_cells(row: pd.Series, metric: str, group: str = "") -> Row:
    """The headline gain against the params- and FLOPs-matched ResNets (columns left out when none ran)."""
    return {(group, f"Gain vs {name}-matched (pp)"): _cell(gain_text(row, f"top1_{metric}_gain_{kind}"))
            for kind, name in (("params", "params"), ("flops", "FLOPs"))}


def _cost_cells(row: pd.Series, group: str = "", paper: bool = True) -> Row:
    """Params (M), FLOPs (G), train samples/s; the paper's params and FLOPs beside ours."""
    cells = {(group, "Params (M)"): _cell(fmt_number(row["params_M"], 3), row["params_M"], "min")}
    if paper:
        cells[(group, "Paper params (M)")] = _cell(fmt_number(row.get("paper_params_M"), 3))
    cells[(group, "FLOPs (G)")] = _cell(fmt_number(row["flops_G"], 3), row["flops_G"], "min")
    if paper:
        cells[(group, "Paper FLOPs (G)")] = _cell(fmt_number(row.get("paper_flops_G"), 3))
    sps = row["train_samples_per_s"]
    cells[(group, "Train samples/s")] = _cell(fmt_number(sps, 0), sps, "max")
    return cells


def stat_columns(metrics: Sequence[str]) -> list[str]:
    """The stable CSV columns of each metric: mean, std, 95 % CI, then its comparisons (against the baseline, then
    the params- and FLOPs-matched controls)."""
    columns = [f"{m}_{stat}" for m in metrics for stat in ("mean", "std", "ci95_low", "ci95_high")]
    for gain in ("gain", "gain_params", "gain_flops"):
        columns += [f"{m}_{gain}{end}" for m in metrics for end in STAT_COLUMNS]
    return columns


CSV_COLUMNS = (
    "label",
    "method",
    "backbone",
    "depth",
    "dataset",
    "grid",
    "n",
    "n_expected",
    "seeds",
    *stat_columns(TOP1_METRICS),
    "baseline",
    "control_params",
    "control_flops",
    "paper_top1",
    "paper_top1_in_ci95",
    "delta_top1",
    "paper_top5",
    "paper_top5_in_ci95",
    "delta_top5",
    "gain",
    "paper_gain",
    "params_M",
    "paper_params_M",
    "flops_G",
    "paper_flops_G",
    "train_samples_per_s",
    "infer_samples_per_s",
    "n_completed",
    "n_failed",
    "n_diverged",
    "n_running",
    "paper_top1_source",
    "config_key",
    "baseline_config_key",
    "control_params_config_key",
    "control_flops_config_key",
)


def _csv_frame(agg: pd.DataFrame, labels: pd.Series, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Numeric rows for a table's CSV: identity, aggregates, paper numbers, counts."""
    data = agg.assign(label=labels)
    columns = [c for c in ("label", *extra, *CSV_COLUMNS[1:]) if c in data]
    return data[list(dict.fromkeys(columns))].reset_index(drop=True)


def _compared(sub: pd.DataFrame, agg: pd.DataFrame, metric: str, opts: Sequence[str] | None = None) -> pd.DataFrame:
    """``sub`` with its comparisons on every top-1/top-5 metric: against our ResNet (the ``gain`` rule) and the
    matched-cost controls, or, given the ablation's ``opts``, against the default DLA setting; control rows are
    moved beside the methods they control."""
    head = f"top1_{metric}_mean"
    if opts is not None:
        return with_comparisons(sub, agg, TOP1_METRICS, default_baselines(sub, opts, head))
    compared = with_comparisons(sub, agg, TOP1_METRICS, resnet_baselines(sub, agg, head),
                                matched_controls(sub, agg, head))
    return beside_methods(compared)


def _labels(sub: pd.DataFrame, config_cols: Sequence[str], skip_opts: bool = False) -> pd.Series:
    """Row labels, a control row's saying what it matches (``ResNet (params-matched)``)."""
    labels = variant_labels(sub, config_cols, skip_opts)
    for index, suffix in control_suffixes(sub).items():
        labels[index] += suffix
    return labels


ONE_SEED_NOTE = ("One seed per configuration: no value is marked best and no gain is tested ('n too small'); the "
                 "table shows what each configuration costs and reaches, not which is better.")


def with_caveats(table: Table, agg: pd.DataFrame,
           caveats: Callable[[pd.DataFrame], list[str]] = lambda rows: []) -> Table:
    """What a table's rows cannot say, said: the task's `caveats` of those rows (classification: the chance level of
    synthetic data), and with one seed per configuration no best marks (a single run's lead is as likely seed noise
    as a difference)."""
    rows = agg[agg["config_key"].isin(table.data["config_key"])] if "config_key" in table.data else agg
    notes = list(table.notes) + caveats(rows)
    if one_seed(rows):
        notes = [n for n in notes if not n.startswith("Bold:")] + [ONE_SEED_NOTE]
        return replace(table, notes=notes, best=table.best & False)
    return replace(table, notes=notes)
