"""The DSU ablation chart: one panel per ablated option group, a bar per setting with its seeds' spread."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ...models.registry import method_info
from ...summary.aggregate import options_to_show, variant_labels, with_real_methods
from ...summary.canvas import _new_figure, ci_bars
from ...summary.display import (
    MISSING,
    dataset_name,
    finite,
    fmt_mean_std,
    method_color,
    method_rank,
    model_name,
    option_text,
    value_text,
)
from .ablation import ablation_rows


def plot_ablation(agg: pd.DataFrame, config_cols: Sequence[str], metric: str = "best") -> Figure | None:
    """DSU ablation: headline top-1 per DLA setting, error bars = std over seeds, thick bars = 95 % CI of the mean,
    one panel per model and dataset.

    Rows are named by the method they built (``dla_l`` + attention=base is DLA-B) and ordered by the paper's method
    order, then by option values; the figure is as wide as its longest row label.
    """
    sub, opts = ablation_rows(agg, config_cols)
    if sub is None:
        return None
    sub = with_real_methods(sub)
    contexts = list(dict.fromkeys(zip(sub["backbone"], sub["depth"], sub["dataset"])))
    parts = [
        _ordered(sub[(sub["backbone"] == b) & (sub["depth"] == d) & (sub["dataset"] == ds)], opts)
        for b, d, ds in contexts
    ]
    names = variant_labels(sub, config_cols, skip_opts=True)
    ticks = {i: _setting_label(sub.loc[i], names[i], opts) for i in sub.index}
    width = max(9.0, 6.0 + 0.065 * max(len(t) for t in ticks.values()))
    sizes = [len(part) + 3.0 for part in parts]
    fig, axes = _new_figure(width, 0.3 * sum(sizes) + 0.6, nrows=len(parts), height_ratios=sizes)
    for ax, part, (backbone, depth, dataset) in zip(axes, parts, contexts):
        _ablation_panel(ax, part, [ticks[i] for i in part.index], metric)
        ax.set_title(f"{dataset_name(dataset)}, {model_name(depth, backbone)}")
    fig.suptitle("DSU ablation: top-1 per DLA setting\n(bars: mean; capped error bars: std over seeds; thick bars: "
                 "95 % CI of the mean)", fontsize=10)
    return fig


def _ordered(part: pd.DataFrame, opts: Sequence[str]) -> pd.DataFrame:
    """Rows in the paper's method order, then by their option values."""
    return part.loc[
        sorted(
            part.index, key=lambda i: (method_rank(part.at[i, "method"]), *(_value_key(part.at[i, o]) for o in opts))
        )
    ]


def _value_key(value: Any) -> tuple:
    """Sort key of an option value: numbers by size, then text (and booleans) by name, unset last."""
    if isinstance(value, (bool, np.bool_)):
        return (1, 0.0, str(value))
    if finite(value):
        return (0, float(value), "")
    text = value_text(value)
    return (2, 0.0, "") if text == MISSING else (1, 0.0, text)


def _setting_label(row: pd.Series, name: str, opts: Sequence[str]) -> str:
    """``DLA-B: cell=lstm, reduction=4``: the options that name the method (attention) are left to its name."""
    try:
        naming = {f"opt.{k}" for k in method_info(str(row["method"])).defaults}
    except ValueError:
        naming = set()
    shown = [f"{o.removeprefix('opt.')}={option_text(row[o])}" for o in options_to_show(row, opts) if o not in naming]
    return f"{name}: {', '.join(shown)}" if shown else name


def _ablation_panel(ax: Any, part: pd.DataFrame, ticks: Sequence[str], metric: str) -> None:
    """One horizontal bar per setting, top to bottom; value and n in a column at the right; x zoomed to the values."""
    means = part[f"top1_{metric}_mean"].to_numpy(float)
    errs = part[f"top1_{metric}_std"].fillna(0.0).to_numpy(float)
    ci_low = part[f"top1_{metric}_ci95_low"].to_numpy(float)
    ci_high = part[f"top1_{metric}_ci95_high"].to_numpy(float)
    ok = np.isfinite(means)
    low = float(np.fmin(means[ok] - errs[ok], ci_low[ok]).min()) if ok.any() else 0.0
    high = float(np.fmax(means[ok] + errs[ok], ci_high[ok]).max()) if ok.any() else 100.0
    pad = max(1.0, high - low)
    left, right = max(0.0, low - pad), high + 2.0 * pad  # the right half holds the value column
    colors = [method_color(m) for m in part["method"]]
    ax.barh(range(len(part)), np.where(ok, means, left), color=colors, alpha=0.85)
    spread = ok & (errs > 0)  # error bars only where there is a std (two or more seeds)
    if spread.any():
        ax.errorbar(means[spread], np.flatnonzero(spread), xerr=errs[spread], fmt="none", ecolor="black", capsize=4)
    ci_bars(ax, means, np.arange(len(part)), ci_low, ci_high, "black", horizontal=True)
    for y, (mean, err, n) in enumerate(zip(means, errs, part["n"])):
        text = f"{fmt_mean_std(mean, err, int(n))} (n={int(n)})" if np.isfinite(mean) else "no completed run"
        ax.text(0.99, y, text, transform=ax.get_yaxis_transform(), ha="right", va="center", fontsize=8)
    ax.set_yticks(range(len(part)), ticks, fontsize=8)
    ax.set_ylim(len(part) - 0.5, -0.5)  # the first row on top
    ax.set_xlim(left, right)
    zoomed = " (axis zoomed, not from 0)" if left > 0 else ""
    ax.set_xlabel(f"Top-1 accuracy (%), {metric} epoch{zoomed}")
    ax.grid(True, axis="x", alpha=0.3)
