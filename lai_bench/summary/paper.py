"""Published numbers: the paper CSV read and checked row by row, in canonical units, and looked up by row.

Columns: ``method,backbone,depth,dataset,metric,value,unit,source`` and an optional ninth, ``detector``: a COCO
number (metric ``bbox_AP``, ``segm_AP50``, ...) names its detector there; classification rows leave it out.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..models.registry import display_name, list_models
from .display import VALUE_NAMES

PAPER_COLUMNS = ("method", "backbone", "depth", "dataset", "metric", "value", "unit", "source")
DETECTOR_COLUMN = "detector"  # optional, last: only COCO rows fill it, so older 8-column files stay valid
# COCOeval's six numbers as the records name them (lai_bench.tasks.detection.evaluate.METRIC_KEYS; kept here so the
# report reads records without importing pycocotools).
COCO_METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
COCO_METRICS = tuple(f"{iou}_{key}" for iou in ("bbox", "segm") for key in COCO_METRIC_KEYS)
# metric -> allowed units, each with the divisor to the canonical unit (% / M params / G FLOPs).
# GMAC counts as G: one multiply-add = one FLOP, the convention of the DLA/MRLA tables.
PAPER_METRICS: dict[str, dict[str, float]] = {
    "top1": {"%": 1.0},
    "top5": {"%": 1.0},
    "top1_err": {"%": 1.0},
    "top5_err": {"%": 1.0},
    "top1_gain": {"%": 1.0, "pp": 1.0},
    "params": {"count": 1e6, "M": 1.0},
    "params_extra": {"count": 1e6, "M": 1.0},
    "flops": {"count": 1e9, "M": 1e3, "G": 1.0, "GMAC": 1.0},
    "flops_extra": {"count": 1e9, "M": 1e3, "G": 1.0, "GMAC": 1.0},
    **{metric: {"%": 1.0} for metric in COCO_METRICS},
}


def load_paper(path: str | os.PathLike | None) -> pd.DataFrame:
    """Published numbers in canonical units (% / M params / G FLOPs); a bad row is skipped with a warning."""
    columns = [*PAPER_COLUMNS, DETECTOR_COLUMN, "line"]
    if path is None:
        return pd.DataFrame(columns=columns)
    path = Path(path)
    numbered = enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
    kept = [(n, line) for n, line in numbered if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader([line for _, line in kept])
    missing = [c for c in PAPER_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(PAPER_COLUMNS)}")
    rows = []
    for raw in reader:
        line = kept[reader.line_num - 1][0]
        row, problem = _paper_row(raw)
        if problem:
            warnings.warn(f"{path} line {line} ({_row_text(raw)}): {problem}; row skipped", stacklevel=2)
        else:
            rows.append({**row, "line": line})
    return pd.DataFrame(rows, columns=columns)


def _row_text(raw: Mapping[str, Any]) -> str:
    """A CSV row as it reads in the file, for messages."""
    columns = (*PAPER_COLUMNS, DETECTOR_COLUMN) if raw.get(DETECTOR_COLUMN) else PAPER_COLUMNS
    return ",".join(str(raw.get(c) or "") for c in columns)


def _paper_row(raw: Mapping[str, Any]) -> tuple[dict, str | None]:
    """Validate one CSV row and convert it to canonical units; ``(row, problem)``."""
    if raw.get(None):
        header = len(raw) - 1  # the header's columns; the extra fields sit under the key None
        return {}, f"{header + len(raw[None])} fields, expected {header} (quote text that contains commas)"
    values = {c: str(raw.get(c) or "").strip() for c in (*PAPER_COLUMNS, DETECTOR_COLUMN)}
    empty = [c for c in ("method", "backbone", "depth", "dataset", "metric", "value") if not values[c]]
    if empty:
        return {}, f"empty {', '.join(empty)}"
    metric, unit = values["metric"], values["unit"]
    if metric not in PAPER_METRICS:
        return {}, f"unknown metric {metric!r} (allowed: {', '.join(PAPER_METRICS)})"
    if unit not in PAPER_METRICS[metric]:
        return {}, f"unit {unit!r} does not fit {metric} (allowed: {', '.join(PAPER_METRICS[metric])})"
    try:
        value = float(values["value"])
    except ValueError:
        return {}, f"value {values['value']!r} is not a number"
    try:
        depth = int(values["depth"])
    except ValueError:
        return {}, f"depth {values['depth']!r} is not an integer"
    if not math.isfinite(value):
        return {}, f"value {values['value']!r} is not finite"
    problem = _detector_problem(values[DETECTOR_COLUMN], metric)
    if problem:
        return {}, problem
    value /= PAPER_METRICS[metric][unit]
    canonical_unit = "M" if metric.startswith("params") else "G" if metric.startswith("flops") else "%"
    if metric.endswith("_err"):
        metric, value = metric[: -len("_err")], 100.0 - value
    method = _method_code(values["method"])
    return {**values, "method": method, "depth": depth, "metric": metric, "value": value, "unit": canonical_unit}, None


def _detector_problem(detector: str, metric: str) -> str | None:
    """What is wrong with a row's detector: COCO metrics need one, accuracies take none; None when fine."""
    DETECTORS = tuple(VALUE_NAMES)  # noqa: N806  (the detectors the detection task names; filled as it registers)
    if detector and detector not in DETECTORS:
        return f"unknown detector {detector!r} (allowed: {', '.join(DETECTORS)})"
    if metric in COCO_METRICS and not detector:
        return f"{metric} needs the detector column (allowed: {', '.join(DETECTORS)})"
    if detector and metric.startswith("top"):
        return f"{metric} is a classification metric; leave the detector column empty"
    return None


def _method_code(name: str) -> str:
    """Accept code names and the paper's display names (any case) in the paper CSV."""
    lookup = {k.lower(): k for k in list_models()} | {display_name(k).lower(): k for k in list_models()}
    return lookup.get(name.lower(), name)


def paper_lookup(paper: pd.DataFrame) -> dict[tuple, tuple[float, str]]:
    """``(method, backbone, depth, dataset, metric) -> (value, source)`` of the classification rows; a later row
    wins, with a warning. Detector rows are the COCO tables' references (``coco.references``), not looked up here."""
    table: dict[tuple, tuple[float, str, int]] = {}
    for row in paper.itertuples(index=False):
        if getattr(row, DETECTOR_COLUMN, ""):
            continue
        key = (row.method, row.backbone, int(row.depth), row.dataset, row.metric)
        if key in table:
            warnings.warn(
                f"paper numbers: line {row.line} overrides line {table[key][2]} for {'/'.join(map(str, key))}",
                stacklevel=2,
            )
        table[key] = (float(row.value), str(row.source), int(row.line))
    return {key: (value, source) for key, (value, source, _) in table.items()}


def derived_gain(lookup: Mapping[tuple, tuple[float, str]], key: tuple) -> float:
    """Paper top-1 of the method minus paper ResNet top-1, when both come from one source.

    ``key`` is ``(method, backbone, depth, dataset)``; the source is the ``source`` text before any ``:``
    (``DIANet README: ...``)."""
    method, rest = key[0], key[1:]
    ours, base = lookup.get((method, *rest, "top1")), lookup.get(("none", *rest, "top1"))
    if method == "none" or not ours or not base or source_name(ours[1]).lower() != source_name(base[1]).lower():
        return np.nan
    return ours[0] - base[0]


def source_name(source: str) -> str:
    """``DIANet README`` from ``DIANet README: ResNet-164 CIFAR-100 (mean of 5 runs)``."""
    return source.split(":", 1)[0].strip()
