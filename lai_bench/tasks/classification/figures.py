"""Figures on the Agg canvas (no pyplot state): accuracy vs cost, training curves, the DSU ablation; PNG and PDF.

Every figure keeps to these rules: a legend lists only what is drawn and sits outside the axes; every label stays
on the canvas (constrained layout, sizes from the labels); curves of a few points are drawn with markers; a run is
named by the method it built (``dla_l`` with ``attention=base`` is DLA-B).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ...summary.aggregate import variant_labels, with_real_methods
from ...summary.canvas import (
    _MARKERS,
    CI_LABEL,
    FEW_POINTS,
    _entry,
    _label_points,
    _legend_outside,
    _new_figure,
    _tags,
    ci_bars,
    save_figure,
)
from ...summary.display import (
    dataset_name,
    finite,
    method_color,
    method_name,
    method_rank,
    model_name,
    natural_key,
    one_seed,
    sortable,
)
from ...summary.paper import paper_lookup
from ...summary.stats import mean_ci
from .ablation_figure import plot_ablation
from .chance import chance_levels, chance_text


def _marker_map(sub: pd.DataFrame) -> dict[int, str]:
    """Marker per row: the method's variants and depths each get their own shape."""
    markers: dict[int, str] = {}
    for _, group in sub.groupby("method", sort=False, dropna=False):
        for k, index in enumerate(group.index):
            markers[index] = _MARKERS[k % len(_MARKERS)]
    return markers


def _point_labels(sub: pd.DataFrame, labels: pd.Series) -> pd.Series:
    """Legend label per row; the model is added when the figure mixes depths."""
    if sub[["backbone", "depth"]].drop_duplicates().shape[0] <= 1:
        return labels.loc[sub.index]
    return pd.Series({i: f"{labels[i]}, {model_name(sub.at[i, 'depth'], sub.at[i, 'backbone'])}" for i in sub.index})


_TRADEOFF_AXES = {"params": ("params_M", "params", "Parameters (M)"), "flops": ("flops_G", "flops", "FLOPs (G)")}


def plot_tradeoff(
    agg: pd.DataFrame,
    labels: pd.Series,
    paper: Mapping[tuple, tuple[float, str]],
    dataset: str,
    x: str,
    metric: str = "best",
) -> Figure | None:
    """Top-1 vs params or FLOPs on one dataset: ours with std error bars and 95 % CI bars above the published
    points (hollow)."""
    column, paper_metric, xlabel = _TRADEOFF_AXES[x]
    head = f"top1_{metric}_mean"
    agg = with_real_methods(agg)
    sub = agg[(agg["dataset"] == dataset) & (agg["n"] > 0) & agg[column].notna() & agg[head].notna()]
    if sub.empty:
        return None
    names = _point_labels(sub, labels)
    sub = sub.loc[
        sorted(sub.index, key=lambda i: (method_rank(sub.at[i, "method"]), sortable(sub.at[i, "depth"]),
                                         natural_key(names[i])))
    ]
    tags = pd.Series(_tags([names[i] for i in sub.index]), index=sub.index)
    fig, (ax,) = _new_figure(10.0, 5.0)
    published = _published_points(sub, paper, column, paper_metric)
    entries = pd.Series({i: _entry(tags[i], names[i]) for i in sub.index})
    handles = _draw_ours(ax, sub, entries, column, metric) + _draw_published(ax, published, set(sub["method"]))
    single = one_seed(sub)
    ours = "ours: one seed each (no error bars)" if single else "ours: mean ± std over seeds"
    handles.append(Line2D([], [], color="black", marker="o", linestyle="", label=ours))
    handles += draw_chance(ax, chance_levels(sub))
    with_ci = sub[f"top1_{metric}_ci95_low"].notna().any() if f"top1_{metric}_ci95_low" in sub else False
    if with_ci:
        handles.append(Line2D([], [], color="black", linewidth=6, alpha=0.3, label=CI_LABEL))
    if published:
        handles.append(
            Line2D([], [], color="black", marker="o", markerfacecolor="none", linestyle="", label="published")
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"Top-1 accuracy (%), {metric} epoch")
    what = "parameters" if x == "params" else "FLOPs"
    bars = "capped error bars: std over seeds" + ("; thick bars: 95 % CI of the mean" if with_ci else "")
    if single:
        bars = SINGLE_SEED
    fig.suptitle(f"{dataset_name(dataset)}: top-1 accuracy vs {what}\n({bars})", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.12, y=0.15)
    _legend_outside(ax, handles)
    _label_points(ax, [(sub.at[i, column], sub.at[i, head], tags[i]) for i in sub.index])
    return fig


# What a figure of one seed per configuration says instead of its error bars: it measures, it does not rank.
SINGLE_SEED = "one seed per configuration: no error bars, no difference tested"


def draw_chance(ax: Any, levels: Sequence[float]) -> list[Line2D]:
    """A dashed grey line at each chance level (synthetic data: 100 / classes %), with its legend entry."""
    for level in levels:
        ax.axhline(level, color="grey", linestyle="--", linewidth=1.0, zorder=1)
    if not levels:
        return []
    return [Line2D([], [], color="grey", linestyle="--", label=chance_text(list(levels)))]


def _draw_ours(ax: Any, sub: pd.DataFrame, names: pd.Series, column: str, metric: str) -> list[Line2D]:
    """Our points with std error bars and 95 % CI bars, above the published ones; the earlier methods (ResNet
    first) on top."""
    markers, handles = _marker_map(sub), {}
    for index in sorted(sub.index, key=lambda i: method_rank(sub.at[i, "method"]), reverse=True):
        row = sub.loc[index]
        color, std = method_color(row["method"]), row[f"top1_{metric}_std"]
        ax.errorbar(
            row[column],
            row[f"top1_{metric}_mean"],
            yerr=std if finite(std) else None,
            fmt=markers[index],
            color=color,
            markersize=8,
            capsize=4,
            elinewidth=1.2,
            zorder=3,
        )
        ci_bars(ax, row[column], row[f"top1_{metric}_mean"], row.get(f"top1_{metric}_ci95_low"),
                row.get(f"top1_{metric}_ci95_high"), color)
        handles[index] = Line2D(
            [], [], color=color, marker=markers[index], linestyle="", label=f"{names[index]} (n={int(row['n'])})"
        )
    return [handles[i] for i in sub.index]


def _draw_published(ax: Any, published: Sequence[tuple[str, float, float]], ours: set) -> list[Line2D]:
    """Published points as hollow circles under ours; a legend entry for a method only published here."""
    handles = []
    for method, px, py in published:
        style = {"color": method_color(method), "marker": "o", "markerfacecolor": "none", "linestyle": ""}
        ax.plot(px, py, markersize=11, markeredgewidth=1.8, zorder=2, **style)
        if method not in ours and method not in [h.get_gid() for h in handles]:
            handles.append(Line2D([], [], gid=method, label=f"{method_name(method)} (published only)", **style))
    return handles


def _published_points(
    sub: pd.DataFrame, paper: Mapping[tuple, tuple[float, str]], column: str, paper_metric: str
) -> list[tuple[str, float, float]]:
    """``(method, x, top-1)`` for published top-1 numbers in the figure's contexts (x: paper's, else ours)."""
    contexts = {(r.backbone, int(r.depth), r.dataset) for r in sub.itertuples() if finite(r.depth)}
    ours_x = {
        (r.method, r.backbone, int(r.depth), r.dataset): getattr(r, column) for r in sub.itertuples() if finite(r.depth)
    }
    points = []
    for (method, backbone, depth, dataset, metric), (value, _) in paper.items():
        if metric != "top1" or (backbone, depth, dataset) not in contexts:
            continue
        key = (method, backbone, depth, dataset)
        px = paper.get((*key, paper_metric), (ours_x.get(key, np.nan), ""))[0]
        if finite(px):
            points.append((method, float(px), value))
    return points


def _curve(records: Sequence[dict], field: str) -> pd.DataFrame:
    """Mean, std, 95 % CI (t interval) and count over seeds of one history field, per epoch (epochs without a
    value left out)."""
    series = []
    for record in records:
        history = pd.DataFrame(record.get("history") or [])
        if field in history and "epoch" in history:
            values = pd.to_numeric(history[field], errors="coerce").replace([np.inf, -np.inf], np.nan)
            series.append(pd.Series(values.to_numpy(), index=history["epoch"].to_numpy()))
    if not series:
        return pd.DataFrame(columns=["mean", "std", "low", "high", "n"])
    stacked = pd.concat(series, axis=1)
    curve = pd.DataFrame({"mean": stacked.mean(axis=1), "std": stacked.std(axis=1, ddof=1), "n": stacked.count(axis=1)})
    bounds = [mean_ci(values) for values in stacked.to_numpy(float)]
    curve["low"], curve["high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    return curve.dropna(subset=["mean"]).sort_index()


_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (1, 3)), (0, (3, 1, 1, 1)))


def plot_curves(
    records: Sequence[dict], frame: pd.DataFrame, labels: Mapping[str, str], dataset: str, metric: str = "best"
) -> Figure | None:
    """Eval top-1 and train loss vs epoch on one dataset: mean over seeds with its 95 % CI as a band (error bars
    and markers when a curve has only a few epochs)."""
    frame = with_real_methods(frame)
    rows = frame.index[(frame["dataset"] == dataset) & frame["status"].isin(["completed", "running"])]
    if not any(records[i].get("history") for i in rows):
        return None
    fig, axes = _new_figure(12.0, 4.6, ncols=2)
    first = frame.loc[rows].drop_duplicates("config_key").set_index("config_key")
    keys = sorted(
        first.index, key=lambda k: (method_rank(first.at[k, "method"]), sortable(first.at[k, "depth"]), labels[k])
    )
    mixed = first[["backbone", "depth"]].drop_duplicates().shape[0] > 1
    names = [labels[k] + (f", {model_name(first.at[k, 'depth'], first.at[k, 'backbone'])}" if mixed else "")
             for k in keys]
    seen, epochs, ends = {}, set(), ([], [])
    for number, (key, name, tag) in enumerate(zip(keys, names, _tags(names))):
        group = [records[i] for i in rows if frame.at[i, "config_key"] == key]
        method = first.at[key, "method"]
        seen[method] = seen.get(method, -1) + 1
        style = {
            "linestyle": _STYLES[seen[method] % len(_STYLES)],
            "color": method_color(method),
            "marker": _MARKERS[number % len(_MARKERS)],
            "label": f"{_entry(tag, name)} ({_seed_count(group)})",
        }
        for ax, field, end in zip(axes, ("eval_top1", "train_loss"), ends):
            curve = _curve(group, field)
            if not curve.empty:
                _draw_curve(ax, curve, style)
                epochs.update(curve.index)
                end.append((curve.index[-1], curve["mean"].iloc[-1], tag, len(curve)))
    for ax, what, ylabel in zip(axes, ("Eval top-1", "Train loss"), ("Eval top-1 accuracy (%)", "Train loss")):
        _epoch_axis(ax, epochs)
        ax.set(xlabel="Epoch", ylabel=ylabel, title=what)
        ax.grid(True, alpha=0.3)
    few = all(n <= FEW_POINTS for end in ends for *_, n in end)
    spread = "markers: mean over seeds, error bars: its 95 % CI" if few else "line: mean over seeds, band: its 95 % CI"
    if all(len([i for i in rows if frame.at[i, "config_key"] == key]) <= 1 for key in keys):
        spread = SINGLE_SEED
    fig.suptitle(f"{dataset_name(dataset)}: training curves ({spread})")
    chance = draw_chance(axes[0], chance_levels(frame.loc[rows]))
    legend_ax = axes[1] if ends[1] else axes[0]
    _legend_outside(legend_ax, legend_ax.get_legend_handles_labels()[0] + chance)
    for ax, end in zip(axes, ends):
        if end and few:  # short curves only: their markers may sit on each other
            _label_points(ax, [(x, y, name) for x, y, name, _ in end])
    return fig


def _seed_count(group: Sequence[dict]) -> str:
    """``n=3`` runs, and how many of them are still running."""
    running = sum(r["status"] == "running" for r in group)
    return f"n={len(group)}" + (f", {running} running" if running else "")


def _draw_curve(ax: Any, curve: pd.DataFrame, style: Mapping[str, Any]) -> None:
    """One mean curve: a band over its 95 % CI (t interval over seeds), or with a few epochs hollow markers and CI
    error bars, which stay visible."""
    few = len(curve) <= FEW_POINTS
    marker = style["marker"] if few else "None"
    ax.plot(
        curve.index,
        curve["mean"],
        linestyle=style["linestyle"],
        color=style["color"],
        linewidth=1.5,
        marker=marker,
        markersize=8,
        markerfacecolor="none",
        markeredgewidth=1.5,
        label=style["label"],
    )
    low, high = curve["low"].fillna(curve["mean"]), curve["high"].fillna(curve["mean"])  # one seed: no band
    if few and (high - low).gt(0).any():
        ax.errorbar(
            curve.index,
            curve["mean"],
            yerr=[curve["mean"] - low, high - curve["mean"]],
            fmt="none",
            ecolor=style["color"],
            capsize=3,
            elinewidth=1.0,
            label="_nolegend_",
        )
    elif not few:
        ax.fill_between(curve.index, low, high, color=style["color"], alpha=0.15, linewidth=0)


def _epoch_axis(ax: Any, epochs: set) -> None:
    """Whole epochs on the x axis; one or a few epochs get a tick each and half an epoch of room on both sides."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if epochs and max(epochs) - min(epochs) < FEW_POINTS:
        low, high = int(min(epochs)), int(max(epochs))
        ax.set_xticks(range(low, high + 1))
        ax.set_xlim(low - 0.5, high + 0.5)


def write_figures(
    records: Sequence[dict],
    frame: pd.DataFrame,
    agg: pd.DataFrame,
    config_cols: Sequence[str],
    paper_rows: pd.DataFrame,
    metric: str,
    folder: Path,
    save: Callable[[Figure, Path, str], list[Path]] = save_figure,
) -> list[Path]:
    """Trade-off plots and training curves per dataset, and the DSU ablation chart, each written by ``save``
    (the report's saver catches a figure's write error, so one unwritable file does not cost the others)."""
    if agg.empty:
        return []
    paths: list[Path] = []
    named = with_real_methods(agg)  # a run is labelled by the method it built
    labels = variant_labels(named, config_cols)
    curve_labels = dict(zip(agg["config_key"], labels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate paper rows were reported with the tables
        paper = paper_lookup(paper_rows)
    for dataset in dict.fromkeys(agg["dataset"].dropna()):
        for x in ("params", "flops"):
            fig = plot_tradeoff(named, labels, paper, dataset, x, metric)
            if fig is not None:
                paths += save(fig, folder, f"acc_vs_{x}_{dataset}")
        fig = plot_curves(records, frame, curve_labels, dataset, metric)
        if fig is not None:
            paths += save(fig, folder, f"curves_{dataset}")
    fig = plot_ablation(agg, config_cols, metric)
    if fig is not None:
        paths += save(fig, folder, "ablation_dsu")
    return paths
