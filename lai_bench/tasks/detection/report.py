"""The papers' COCO tables (box AP per detector, mask AP for Mask R-CNN) and the AP-vs-GFLOPs figure.

Only detection records (``task: detection``) come here, and only here. The headline is the final epoch's COCO val AP:
what the DLA/MRLA papers and the mmdetection/torchvision model zoos report. Published rows (paper CSV rows with a
detector) stand beside ours as rows of their own, one per source, named ``ResNet (mmdetection)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ...summary.aggregate import GAIN_MATCH, gain_over_resnet, variant_labels, with_real_methods
from ...summary.canvas import (
    _MARKERS,
    _entry,
    _label_points,
    _legend_outside,
    _new_figure,
    _tags,
    ci_bars,
    save_figure,
)
from ...summary.compare import STAT_COLUMNS, gain_text, resnet_baselines, with_comparisons
from ...summary.display import (
    MISSING,
    dataset_name,
    detector_name,
    finite,
    fmt_mean_std,
    fmt_number,
    method_color,
    method_name,
    method_rank,
    model_name,
    sortable,
    value_text,
)
from ...summary.paper import COCO_METRIC_KEYS, source_name
from ...summary.tables import STATS_NOTE, Row, Table, _assemble, _cell
from .model import DETECTORS

KINDS = {"box": "bbox", "mask": "segm"}  # table kind -> the records' metric prefix (COCOeval's iouType)
# Column heads of the six COCOeval numbers, as the papers print them.
AP_HEADS = dict(zip(COCO_METRIC_KEYS, ("AP", "AP50", "AP75", "APS", "APM", "APL")))
REFERENCE_KEYS = ("detector", "method", "backbone", "depth", "dataset", "source")
CSV_HEAD = ("label", "row", "method", "backbone", "depth", "detector", "dataset", "init", "grid", "n", "n_expected",
            "seeds", "params_M", "backbone_params_M", "flops_G")
CSV_TAIL = ("gain", "baseline", "infer_images_per_s", "n_completed", "n_failed", "n_diverged", "n_running", "source",
            "config_key", "baseline_config_key")


# ----------------------------------------------------------------------------- published rows


def references(paper: pd.DataFrame) -> pd.DataFrame:
    """Published COCO numbers, one row per detector, method, model, dataset and source (the source text before its
    ``:``), with its metrics (``bbox_AP``.., ``segm_AP``.., ``params``, ``flops``) as columns; a later CSV row for the
    same number wins, with a warning."""
    rows: dict[tuple, dict] = {}
    for row in paper[paper["detector"].fillna("") != ""].itertuples(index=False):
        key = (row.detector, row.method, row.backbone, int(row.depth), row.dataset, source_name(row.source))
        entry = rows.setdefault(key, {**dict(zip(REFERENCE_KEYS, key)), "lines": {}, "texts": []})
        if row.metric in entry["lines"]:
            warnings.warn(f"paper numbers: line {row.line} overrides line {entry['lines'][row.metric]} for "
                          f"{'/'.join(map(str, key))}/{row.metric}", stacklevel=2)
        entry[row.metric], entry["lines"][row.metric] = float(row.value), int(row.line)
        entry["texts"] = list(dict.fromkeys([*entry["texts"], str(row.source)]))
    frame = pd.DataFrame([{k: v for k, v in e.items() if k != "lines"} for e in rows.values()])
    if frame.empty:
        return pd.DataFrame(columns=[*REFERENCE_KEYS, "label", "sources"])
    frame["label"] = [f"{method_name(m)} ({s or 'published'})" for m, s in zip(frame["method"], frame["source"])]
    frame["sources"] = ["; ".join(texts) for texts in frame.pop("texts")]
    return frame


def _references_at(refs: pd.DataFrame, dataset: str, detector: str, depth: int, metric: str) -> pd.DataFrame:
    """The published rows of one detector, dataset and depth that give ``metric``."""
    if refs.empty or metric not in refs:
        return refs.iloc[0:0]
    match = (refs["dataset"] == dataset) & (refs["detector"] == detector) & (refs["depth"] == depth)
    found = refs[match & refs[metric].notna()]
    return found.loc[sorted(found.index, key=lambda i: (method_rank(found.at[i, "method"]), found.at[i, "source"]))]


# ----------------------------------------------------------------------------- tables


def with_init(agg: pd.DataFrame) -> pd.DataFrame:
    """``init``: how the backbone started, ``ImageNet`` (a ``pretrained`` file) or ``random``."""
    pretrained = agg["pretrained"] if "pretrained" in agg else pd.Series(np.nan, index=agg.index)
    return agg.assign(init=["random" if value_text(p) == MISSING else "ImageNet" for p in pretrained])


def _notes(kind: str, random_init: bool, published: pd.DataFrame) -> list[str]:
    """The caption of a COCO table; ``published``: its published rows (those whose source says "not 1x" are named)."""
    what = "box" if kind == "box" else "mask"
    notes = [
        f"Headline: COCO val {what} AP (%) of the final epoch, as the DLA/MRLA papers and the mmdetection and "
        "torchvision model zoos report it; the best epoch's AP is in the CSV.",
        "Cells: mean ± sample std (ddof=1) over completed seeds; n = completed seeds / seeds in the grid. "
        "AP: IoU 0.50:0.95; AP50, AP75: IoU 0.5, 0.75; APS/APM/APL: small/medium/large objects (COCOeval).",
        "Published rows, named 'method (source)': paper_results.csv rows with this detector, at the depths we ran; "
        "their full source text is in the CSV's source column.",
        "Params: the whole detector in M (10⁶); GFLOPs: fvcore at batch 1 and a 1280×800 input (mmdetection's "
        "convention), one multiply-add = one FLOP, ops fvcore cannot count left out. "
        "Gain = AP minus our ResNet's with the same detector, depth and recipe.",
        STATS_NOTE,
        "Bold: best of our rows per column.",
    ]
    longer = sorted({label for label, text in zip(published.get("label", []), published.get("sources", []))
                     if "not 1x" in text})
    if longer:
        notes.append(f"{', '.join(longer)}: trained longer than 1x (its source says how long).")
    if random_init:
        notes.append("Init random: the backbone was not loaded from ImageNet weights (no pretrained file); "
                     "such rows are not comparable with the published ones.")
    return notes


def _our_cells(row: pd.Series, label: str, iou: str, show_init: bool) -> Row:
    """One of our configurations: identity, n, costs, the six final-epoch APs (mean ± std) and the AP gain."""
    n = int(row["n"])
    cells = {("", "Method"): _cell(label), ("", "Model"): _cell(model_name(row["depth"]))}
    if show_init:
        cells[("", "Init")] = _cell(row["init"])
    cells[("", "n")] = _cell(f"{n}/{int(row['n_expected'])}")
    cells[("", "Params (M)")] = _cell(fmt_number(row["params_M"], 2), row["params_M"], "min")
    cells[("", "GFLOPs")] = _cell(fmt_number(row["flops_G"], 1), row["flops_G"], "min")
    for key, head in AP_HEADS.items():
        mean, std = row.get(f"{iou}_{key}_final_mean"), row.get(f"{iou}_{key}_final_std")
        cells[("", head)] = _cell(fmt_mean_std(mean, std, n, digits=1), mean, "max")
    cells[("", "Gain (pp)")] = _cell(gain_text(row, f"{iou}_AP_final_gain", 1))
    return cells


def _reference_cells(ref: pd.Series, iou: str, show_init: bool) -> Row:
    """A published row: its numbers as printed (never bold), ``–`` where the source gives none."""
    cells = {("", "Method"): _cell(ref["label"]), ("", "Model"): _cell(model_name(ref["depth"]))}
    if show_init:
        cells[("", "Init")] = _cell("ImageNet")
    cells[("", "n")] = _cell(MISSING)
    cells[("", "Params (M)")] = _cell(fmt_number(ref.get("params"), 2))
    cells[("", "GFLOPs")] = _cell(fmt_number(ref.get("flops"), 1))
    for key, head in AP_HEADS.items():
        cells[("", head)] = _cell(fmt_number(ref.get(f"{iou}_{key}"), 1))
    return cells


def coco_table(
    agg: pd.DataFrame, config_cols: Sequence[str], refs: pd.DataFrame, dataset: str, detector: str, kind: str = "box"
) -> Table | None:
    """One detector's box (or, for Mask R-CNN, mask) AP table on one dataset: per depth, the published rows, then
    ours in the paper's method order."""
    iou = KINDS[kind]
    if agg.empty or "detector" not in agg or (kind == "mask" and detector != "mask_rcnn"):
        return None
    sub = with_init(agg[(agg["dataset"] == dataset) & (agg["detector"] == detector)])
    if sub.empty:
        return None
    sub = sub.loc[sorted(sub.index, key=lambda i: (sortable(sub.at[i, "depth"]), method_rank(sub.at[i, "method"])))]
    head = f"{iou}_AP_final_mean"
    match = (*GAIN_MATCH, "init")
    sub = sub.assign(gain=[gain_over_resnet(sub, i, head, match) for i in sub.index])
    sub = with_comparisons(sub, sub, [f"{iou}_AP_{which}" for which in ("final", "best")],
                           resnet_baselines(sub, sub, head, match))
    labels = variant_labels(sub, config_cols)
    show_init = bool((sub["init"] == "random").any())
    rows, published = [], []
    for depth in dict.fromkeys(sub["depth"]):
        here = _references_at(refs, dataset, detector, int(depth), f"{iou}_AP") if finite(depth) else refs.iloc[0:0]
        rows += [_reference_cells(ref, iou, show_init) for _, ref in here.iterrows()]
        published.append(here)
        rows += [_our_cells(row, labels[i], iou, show_init) for i, row in sub[sub["depth"] == depth].iterrows()]
    title = f"{dataset_name(dataset)} {detector_name(detector)} FPN: {kind} AP (%) of the final epoch per method"
    published = pd.concat([p for p in published if len(p)] or [refs.iloc[0:0]])
    data = _csv_frame(sub.assign(label=labels), published, iou)
    notes = _notes(kind, show_init, published)
    return _assemble(f"{dataset}_{detector}_{kind}", title, notes, rows, data, f"{iou}_AP_final")


def _csv_frame(ours: pd.DataFrame, published: pd.DataFrame, iou: str) -> pd.DataFrame:
    """The table's CSV: our rows (final and best AP, mean and std) and the published rows (their numbers in the
    ``*_final_mean`` columns, ``row`` = published, ``source`` = their full source text)."""
    metrics = [f"{iou}_{key}_{which}_{stat}" for key in AP_HEADS for which in ("final", "best")
               for stat in ("mean", "std", "ci95_low", "ci95_high")]
    metrics += [f"{iou}_AP_{which}_gain{end}" for which in ("final", "best") for end in STAT_COLUMNS]
    ours = ours.assign(row="ours", source="")
    theirs = pd.DataFrame({
        "label": published.get("label", []), "row": "published", "method": published.get("method", []),
        "backbone": published.get("backbone", []), "depth": published.get("depth", []),
        "detector": published.get("detector", []), "dataset": published.get("dataset", []), "init": "ImageNet",
        "params_M": published.get("params", np.nan), "flops_G": published.get("flops", np.nan),
        **{f"{iou}_{key}_final_mean": published.get(f"{iou}_{key}", np.nan) for key in AP_HEADS},
        "source": published.get("sources", []),
    })
    columns = [*CSV_HEAD, *metrics, *CSV_TAIL]
    frames = [f.reindex(columns=columns) for f in (theirs, ours) if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def coco_tables(agg: pd.DataFrame, config_cols: Sequence[str], refs: pd.DataFrame) -> list[Table]:
    """Every COCO table the detection rows fill: per dataset, a box table per detector, then Mask R-CNN's mask table."""
    if agg.empty or "detector" not in agg:
        return []
    tables = []
    for dataset in dict.fromkeys(agg["dataset"].dropna()):
        for detector, kind in [(d, "box") for d in DETECTORS] + [("mask_rcnn", "mask")]:
            table = coco_table(agg, config_cols, refs, dataset, detector, kind)
            if table is not None:
                tables.append(table)
    return tables


# ----------------------------------------------------------------------------- figure


def plot_ap_vs_flops(agg: pd.DataFrame, config_cols: Sequence[str], refs: pd.DataFrame, dataset: str) -> Figure | None:
    """Final-epoch AP vs GFLOPs on one dataset, a panel per detector (and Mask R-CNN's mask AP): our points with std
    error bars and 95 % CI bars, published ones hollow at their GFLOPs (or our ResNet's), every point named."""
    named = with_init(with_real_methods(agg[agg["dataset"] == dataset]))
    panels = []
    for detector, iou in [(d, "bbox") for d in DETECTORS] + [("mask_rcnn", "segm")]:
        head = f"{iou}_AP_final_mean"
        if head not in named:
            continue
        sub = named[(named["detector"] == detector) & (named["n"] > 0) & named["flops_G"].notna() & named[head].notna()]
        if len(sub):
            panels.append((detector, iou, sub))
    if not panels:
        return None
    mixed = named["depth"].nunique() > 1
    points = [_panel_points(sub, config_cols, refs, dataset, detector, iou, mixed) for detector, iou, sub in panels]
    names = list(dict.fromkeys(point[4] for panel in points for point in panel))
    tags = dict(zip(names, _tags(names)))
    fig, axes = _new_figure(1.5 + 4.5 * len(panels), 4.8, ncols=len(panels))
    styles: dict[str, dict] = {}
    for ax, (detector, iou, _), panel in zip(axes, panels, points):
        for x, y, std, method, name, published, low, high in panel:
            style = styles.setdefault(name, _style(method, name, styles, published))
            if published:
                ax.plot(x, y, markersize=11, markeredgewidth=1.8, markerfacecolor="none", linestyle="", zorder=2,
                        color=style["color"], marker="o")
            else:
                ax.errorbar(x, y, yerr=std if finite(std) else None, fmt=style["marker"], color=style["color"],
                            markersize=8, capsize=4, elinewidth=1.2, zorder=3)
                ci_bars(ax, x, y, low, high, style["color"])
        ax.set_title(f"{detector_name(detector)}" + (" (mask AP)" if iou == "segm" else ""))
        ax.set_xlabel("GFLOPs (fvcore, 1280×800)")
        ax.set_ylabel(f"{'Box' if iou == 'bbox' else 'Mask'} AP (%), final epoch")
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.2, y=0.2)
    handles = [Line2D([], [], color=s["color"], marker=s["marker"], linestyle="", label=_entry(tags[n], n),
                      markerfacecolor="none" if s["published"] else s["color"]) for n, s in styles.items()]
    fig.suptitle(f"{dataset_name(dataset)}: AP of the final epoch vs GFLOPs\n(capped error bars: std over seeds; "
                 "thick bars: 95 % CI of the mean; hollow: published)", fontsize=11)
    _legend_outside(axes[-1], handles)
    for ax, panel in zip(axes, points):
        _label_points(ax, [(point[0], point[1], tags[point[4]]) for point in panel])
    return fig


def _style(method: str, name: str, styles: dict, published: bool) -> dict:
    """A point's colour (its method's) and marker (the method's k-th name gets the k-th marker); published: hollow."""
    k = sum(s["method"] == method and not s["published"] for s in styles.values())
    return {"method": method, "color": method_color(method), "marker": "o" if published else _MARKERS[k % 12],
            "published": published}


def _panel_points(
    sub: pd.DataFrame, config_cols: Sequence[str], refs: pd.DataFrame, dataset: str, detector: str, iou: str,
    mixed: bool,
) -> list[tuple[float, float, float, str, str, bool, float, float]]:
    """``(GFLOPs, AP, std, method, name, published, CI low, CI high)`` per point of one panel: ours, then the
    published rows at our depths, placed at their own GFLOPs or else at our ResNet's of that depth."""
    labels = variant_labels(sub, config_cols)
    sub = sub.loc[sorted(sub.index, key=lambda i: (method_rank(sub.at[i, "method"]), sortable(sub.at[i, "depth"])))]
    points = []
    for i, row in sub.iterrows():
        name = labels[i] + (f", {model_name(row['depth'])}" if mixed else "")
        if row["init"] == "random":
            name += " (random init)"
        points.append((row["flops_G"], row[f"{iou}_AP_final_mean"], row[f"{iou}_AP_final_std"], row["method"], name,
                       False, row.get(f"{iou}_AP_final_ci95_low"), row.get(f"{iou}_AP_final_ci95_high")))
    for depth in dict.fromkeys(sub["depth"]):
        ours = sub[(sub["depth"] == depth) & (sub["method"] == "none")]["flops_G"]
        for _, ref in _references_at(refs, dataset, detector, int(depth), f"{iou}_AP").iterrows():
            x = ref.get("flops") if finite(ref.get("flops")) else (ours.iloc[0] if len(ours) else np.nan)
            if finite(x):
                name = ref["label"] + (f", {model_name(depth)}" if mixed else "")
                points.append((float(x), ref[f"{iou}_AP"], np.nan, ref["method"], name, True, np.nan, np.nan))
    return points


def write_coco_figures(agg: pd.DataFrame, config_cols: Sequence[str], refs: pd.DataFrame, folder: Path,
                       save: Callable[[Figure, Path, str], list[Path]] = save_figure) -> list[Path]:
    """``ap_vs_flops_<dataset>`` (PNG and PDF) for every dataset with detection results, each written by ``save``."""
    if agg.empty or "detector" not in agg:
        return []
    paths: list[Path] = []
    for dataset in dict.fromkeys(agg["dataset"].dropna()):
        fig = plot_ap_vs_flops(agg, config_cols, refs, dataset)
        if fig is not None:
            paths += save(fig, folder, f"ap_vs_flops_{dataset}")
    return paths


# ----------------------------------------------------------------------------- the task's report hook
# What earlier reports of this task wrote: a later report removes those it did not rewrite.
TABLE_FILES = tuple(f"*_{detector}_{kind}.*" for detector in DETECTORS for kind in ("box", "mask"))
FIGURE_FILES = ("ap_vs_flops_*",)


def detection_report(cls: Any, frame: pd.DataFrame, config_cols: Sequence[str], context: Any) -> Any:
    """The COCO tables and the AP-vs-GFLOPs figures of the detection runs."""
    from ...summary.aggregate import COCO_RECORD_METRICS, aggregate
    from ...summary.report import ReportPart

    agg = aggregate(frame, config_cols, COCO_RECORD_METRICS)
    refs = references(context.paper)
    figures = write_coco_figures(agg, config_cols, refs, context.figures, context.save)
    return ReportPart(coco_tables(agg, config_cols, refs), [], figures, agg)
