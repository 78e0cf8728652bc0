"""Figures on the Agg canvas (no pyplot state): accuracy vs cost, training curves, the DSU ablation; PNG and PDF."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ..files import atomic_open
from .aggregate import ablation_rows, variant_labels
from .display import (
    dataset_name,
    finite,
    fmt_mean_std,
    method_color,
    method_name,
    method_rank,
    model_name,
    option_text,
    sortable,
)
from .paper import paper_lookup


def _new_figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list]:
    """A figure on the Agg canvas (no pyplot state) and its axes."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def save_figure(fig: Figure, folder: Path, stem: str) -> list[Path]:
    """Write ``<stem>.png`` (150 dpi) and ``<stem>.pdf``, each atomically."""
    paths = [folder / f"{stem}.png", folder / f"{stem}.pdf"]
    for path in paths:
        with atomic_open(path, "wb") as handle:
            fig.savefig(handle, format=path.suffix[1:], dpi=150)
    return paths


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")


def _marker_map(sub: pd.DataFrame) -> dict[int, str]:
    """Marker per row: the method's variants and depths each get their own shape."""
    markers: dict[int, str] = {}
    for _, group in sub.groupby("method", sort=False, dropna=False):
        for k, index in enumerate(group.index):
            markers[index] = _MARKERS[k % len(_MARKERS)]
    return markers


def _point_labels(sub: pd.DataFrame, labels: pd.Series) -> pd.Series:
    """Legend label per row; the model is added when the figure mixes depths."""
    if sub["depth"].nunique() <= 1:
        return labels.loc[sub.index]
    return pd.Series({i: f"{labels[i]}, {model_name(sub.at[i, 'depth'])}" for i in sub.index})


def plot_tradeoff(
    agg: pd.DataFrame,
    labels: pd.Series,
    paper: Mapping[tuple, tuple[float, str]],
    dataset: str,
    x: str,
    metric: str = "best",
) -> Figure | None:
    """Top-1 vs params or FLOPs on one dataset: ours with std error bars, published points hollow."""
    column, paper_metric, xlabel = {
        "params": ("params_M", "params", "Parameters (M)"),
        "flops": ("flops_G", "flops", "FLOPs (G)"),
    }[x]
    head = f"top1_{metric}_mean"
    sub = agg[(agg["dataset"] == dataset) & (agg["n"] > 0) & agg[column].notna() & agg[head].notna()]
    if sub.empty:
        return None
    fig, (ax,) = _new_figure(10.0, 5.0)
    names, markers = _point_labels(sub, labels), _marker_map(sub)
    handles = []
    for index, row in sub.iterrows():
        color, std = method_color(row["method"]), row[f"top1_{metric}_std"]
        ax.errorbar(
            row[column],
            row[head],
            yerr=std if finite(std) else None,
            fmt=markers[index],
            color=color,
            markersize=8,
            capsize=4,
            elinewidth=1.2,
        )
        handles.append(
            Line2D(
                [], [], color=color, marker=markers[index], linestyle="", label=f"{names[index]} (n={int(row['n'])})"
            )
        )
    published = _published_points(sub, paper, column, paper_metric)
    for method, px, py in published:
        ax.plot(
            px,
            py,
            marker="o",
            markersize=11,
            markerfacecolor="none",
            markeredgewidth=1.8,
            color=method_color(method),
            linestyle="",
        )
        if method not in set(sub["method"]):
            handles.append(
                Line2D(
                    [],
                    [],
                    color=method_color(method),
                    marker="o",
                    markerfacecolor="none",
                    linestyle="",
                    label=f"{method_name(method)} (published only)",
                )
            )
    handles += [
        Line2D([], [], color="black", marker="o", linestyle="", label="ours: mean ± std over seeds"),
        Line2D([], [], color="black", marker="o", markerfacecolor="none", linestyle="", label="published"),
    ]
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"Top-1 accuracy (%), {metric} epoch")
    what = "parameters" if x == "params" else "FLOPs"
    fig.suptitle(f"{dataset_name(dataset)}: top-1 accuracy vs {what} (error bars: std over seeds)")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.12, y=0.15)
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    return fig


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
    """Mean, std and count over seeds of one history field, per epoch."""
    series = []
    for record in records:
        history = pd.DataFrame(record.get("history") or [])
        if field in history and "epoch" in history:
            values = pd.to_numeric(history[field], errors="coerce").replace([np.inf, -np.inf], np.nan)
            series.append(pd.Series(values.to_numpy(), index=history["epoch"].to_numpy()))
    if not series:
        return pd.DataFrame(columns=["mean", "std", "n"])
    stacked = pd.concat(series, axis=1)
    return pd.DataFrame(
        {"mean": stacked.mean(axis=1), "std": stacked.std(axis=1, ddof=1), "n": stacked.count(axis=1)}
    ).sort_index()


def plot_curves(
    records: Sequence[dict], frame: pd.DataFrame, labels: Mapping[str, str], dataset: str, metric: str = "best"
) -> Figure | None:
    """Eval top-1 and train loss vs epoch on one dataset: mean over seeds with a ±std band."""
    rows = frame.index[(frame["dataset"] == dataset) & frame["status"].isin(["completed", "running"])]
    if not any(records[i].get("history") for i in rows):
        return None
    fig, axes = _new_figure(12.0, 4.6, ncols=2)
    styles = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (1, 3)), (0, (3, 1, 1, 1)))
    seen: dict[Any, int] = {}
    first = frame.loc[rows].drop_duplicates("config_key").set_index("config_key")
    keys = sorted(
        first.index, key=lambda k: (method_rank(first.at[k, "method"]), sortable(first.at[k, "depth"]), labels[k])
    )
    mixed = first["depth"].nunique() > 1
    for key in keys:
        group = [records[i] for i in rows if frame.at[i, "config_key"] == key]
        running = sum(r["status"] == "running" for r in group)
        count = f"n={len(group)}" + (f", {running} running" if running else "")
        method = first.at[key, "method"]
        label = labels[key] + (f", {model_name(first.at[key, 'depth'])}" if mixed else "")
        style = styles[seen.setdefault(method, 0) % len(styles)]
        seen[method] += 1
        for ax, name in zip(axes, ("eval_top1", "train_loss")):
            curve = _curve(group, name)
            if curve.empty:
                continue
            color = method_color(method)
            ax.plot(curve.index, curve["mean"], linestyle=style, color=color, linewidth=1.5, label=f"{label} ({count})")
            band = curve["std"].fillna(0.0)
            ax.fill_between(
                curve.index, curve["mean"] - band, curve["mean"] + band, color=color, alpha=0.15, linewidth=0
            )
    axes[0].set_ylabel("Eval top-1 accuracy (%)")
    axes[1].set_ylabel("Train loss")
    for ax, what in zip(axes, ("Eval top-1", "Train loss")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Epoch")
        ax.grid(True, alpha=0.3)
        ax.set_title(what)
    fig.suptitle(f"{dataset_name(dataset)}: training curves (line: mean over seeds, band: ± std)")
    axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    return fig


def plot_ablation(agg: pd.DataFrame, config_cols: Sequence[str], metric: str = "best") -> Figure | None:
    """DSU ablation: headline top-1 per DLA setting, error bars = std over seeds, one panel per model and dataset."""
    sub, opts = ablation_rows(agg, config_cols)
    if sub is None:
        return None
    contexts = list(dict.fromkeys(zip(sub["backbone"], sub["depth"], sub["dataset"])))
    parts = [sub[(sub["backbone"] == b) & (sub["depth"] == d) & (sub["dataset"] == ds)] for b, d, ds in contexts]
    height = max(2.8, 0.5 * max(len(part) for part in parts) + 1.8)
    fig, axes = _new_figure(7.5 * len(contexts), height, ncols=len(contexts))
    names = variant_labels(sub, config_cols, skip_opts=True)
    for ax, part, (_, depth, dataset) in zip(axes, parts, contexts):
        _ablation_panel(ax, part.iloc[::-1], names, opts, metric)
        ax.set_title(f"{dataset_name(dataset)}, {model_name(depth)}")
    fig.suptitle("DSU ablation: top-1 per DLA setting (bars: mean, error bars: std over seeds)")
    return fig


def _ablation_panel(ax: Any, part: pd.DataFrame, names: pd.Series, opts: Sequence[str], metric: str) -> None:
    """One horizontal bar per setting, labelled with its options, value and n; x zoomed to the values."""
    means = part[f"top1_{metric}_mean"].to_numpy(float)
    errs = part[f"top1_{metric}_std"].fillna(0.0).to_numpy(float)
    ticks = [
        f"{names[i]}: " + ", ".join(f"{o.removeprefix('opt.')}={option_text(part.at[i, o])}" for o in opts)
        for i in part.index
    ]
    ok = np.isfinite(means)
    low = float((means[ok] - errs[ok]).min()) if ok.any() else 0.0
    high = float((means[ok] + errs[ok]).max()) if ok.any() else 100.0
    pad = max(1.0, high - low)
    left, right = max(0.0, low - pad), min(100.0, high + 1.8 * pad)
    colors = [method_color(m) for m in part["method"]]
    ax.barh(range(len(part)), np.where(ok, means, left), xerr=errs, color=colors, alpha=0.85, capsize=4)
    for y, (mean, err, n) in enumerate(zip(means, errs, part["n"])):
        text = f"{fmt_mean_std(mean, err, int(n))} (n={int(n)})" if np.isfinite(mean) else "no completed run"
        ax.text(mean + err if np.isfinite(mean) else left, y, "  " + text, va="center", fontsize=8)
    ax.set_yticks(range(len(part)), ticks, fontsize=8)
    ax.set_xlim(left, right)
    ax.set_xlabel(f"Top-1 accuracy (%), {metric} epoch (axis zoomed, not from 0)")
    ax.grid(True, axis="x", alpha=0.3)


def write_figures(
    records: Sequence[dict],
    frame: pd.DataFrame,
    agg: pd.DataFrame,
    config_cols: Sequence[str],
    paper_rows: pd.DataFrame,
    metric: str,
    folder: Path,
) -> list[Path]:
    """Trade-off plots and training curves per dataset, and the DSU ablation chart."""
    if agg.empty:
        return []
    paths: list[Path] = []
    labels = variant_labels(agg, config_cols)
    curve_labels = dict(zip(agg["config_key"], labels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate paper rows were reported with the tables
        paper = paper_lookup(paper_rows)
    for dataset in dict.fromkeys(agg["dataset"].dropna()):
        for x in ("params", "flops"):
            fig = plot_tradeoff(agg, labels, paper, dataset, x, metric)
            if fig is not None:
                paths += save_figure(fig, folder, f"acc_vs_{x}_{dataset}")
        fig = plot_curves(records, frame, curve_labels, dataset, metric)
        if fig is not None:
            paths += save_figure(fig, folder, f"curves_{dataset}")
    fig = plot_ablation(agg, config_cols, metric)
    if fig is not None:
        paths += save_figure(fig, folder, "ablation_dsu")
    return paths
