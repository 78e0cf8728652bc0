"""Paper-style tables (Markdown, LaTeX, CSV), a run-status report and figures from run records.

    python -m lai_bench.report results/cifar/ results/imagenet/ --out analysis/ \
        [--paper analysis/paper_results.csv] [--metric best|final] [--expected FILE]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .errors import error_line
from .models.registry import MethodInfo, display_name, list_models, method_info
from .results import NON_IDENTIFYING_KEYS, config_key, flatten_config, load_records, records_frame

__all__ = [
    "Table",
    "load_paper",
    "aggregate",
    "cifar_table",
    "imagenet_table",
    "ablation_table",
    "all_runs_table",
    "to_markdown",
    "to_latex",
    "status_markdown",
    "build_report",
    "main",
]

DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet", "synthetic": "Synthetic"}
DLA_METHODS = ("dla_l", "dla_b")
STATUS_ORDER = ("completed", "diverged", "failed", "running")
# Config keys that name the table's axes (or follow from the dataset), never a "variant".
AXIS_KEYS = ("method", "backbone", "depth", "dataset", "num_classes")
DATASET_KEYS = ("dataset", "num_classes")
# The reference ResNet for "gain" shares these with the method's row.
GAIN_MATCH = ("backbone", "depth", "block", "dataset", "epochs")
NUMERIC = (
    "top1_final",
    "top1_best",
    "top5_final",
    "top5_best",
    "best_epoch",
    "params",
    "flops",
    "train_samples_per_s",
    "infer_samples_per_s",
    "peak_memory_bytes",
    "wall_time_s",
    "diverged_epoch",
    "epochs_done",
    "depth",
    "seed",
)
MISSING = "–"
# Looked for when --paper is not given: the working directory's analysis/, then the checkout's.
DEFAULT_PAPER = (Path("analysis/paper_results.csv"), Path(__file__).resolve().parents[1] / "analysis/paper_results.csv")

PAPER_COLUMNS = ("method", "backbone", "depth", "dataset", "metric", "value", "unit", "source")
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
}


# ----------------------------------------------------------------------------- names


def _registered(method: Any) -> MethodInfo | None:
    """The method's registry entry (display name, order, colour); None for a method this code does not know."""
    try:
        return method_info(str(method))
    except ValueError:
        return None


def method_name(method: Any) -> str:
    """The paper's display name of a method (its code name when unknown)."""
    info = _registered(method)
    return info.display if info else str(method)


def method_rank(method: Any) -> tuple[float, str]:
    """Sort key: the paper's order, then the name; unknown methods last."""
    info = _registered(method)
    return (info.order if info else float("inf"), str(method))


def method_color(method: Any) -> str:
    """A fixed colour per method; unknown methods get a stable colour from tab20."""
    info = _registered(method)
    if info and info.color:
        return info.color
    from matplotlib import colormaps

    index = sum(map(ord, str(method))) % 20
    return colormaps["tab20"](index)


def model_name(depth: Any) -> str:
    """``ResNet-164`` from a depth."""
    return f"ResNet-{int(depth)}" if _finite(depth) else "ResNet-?"


def dataset_name(dataset: Any) -> str:
    """``CIFAR-100`` from ``cifar100``."""
    return DATASET_NAMES.get(dataset, str(dataset))


# ----------------------------------------------------------------------------- formatting


def _finite(value: Any) -> bool:
    """True for a real, finite number."""
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt_mean_std(mean: Any, std: Any, n: int, digits: int = 2) -> str:
    """``77.10 ± 0.25``; the mean alone when fewer than two seeds; ``–`` when missing."""
    if not _finite(mean):
        return MISSING
    if n >= 2 and _finite(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def fmt_number(value: Any, digits: int = 2, signed: bool = False) -> str:
    """A fixed-point number, ``+`` signed if asked; ``–`` when missing."""
    if not _finite(value):
        return MISSING
    if signed:  # a true minus sign, so LaTeX does not typeset a hyphen
        return f"{float(value):+.{digits}f}".replace("-", "−")
    return f"{float(value):.{digits}f}"


def _option_text(value: Any) -> str:
    """A config option for a label: an option a run did not set is the model's default."""
    text = _value_text(value)
    return "default" if text == MISSING else text


def _n_distinct(values: pd.Series) -> int:
    """Distinct values, a missing value counting as one of them."""
    return values.map(_value_text).nunique()


def _value_text(value: Any) -> str:
    """A config value as a short label fragment."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ----------------------------------------------------------------------------- loading


def load_results(results_dirs: Iterable[str | os.PathLike]) -> tuple[list[dict], list[str]]:
    """Records from every folder, duplicates of one run id resolved; also the skipped-file messages."""
    records: list[dict] = []
    seen: set[Path] = set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for folder in results_dirs:
            resolved = Path(folder).resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            records.extend(load_records(folder))
    skipped = [str(w.message) for w in caught]
    for message in skipped:
        warnings.warn(message, stacklevel=2)
    records, notes = _dedupe(records)
    return records, skipped + notes


def _dedupe(records: list[dict]) -> tuple[list[dict], list[str]]:
    """Keep one record per run id (completed first, then newest); say which were set aside."""
    rank = {status: i for i, status in enumerate(STATUS_ORDER)}
    by_id: dict[str, list[dict]] = {}
    for record in records:
        by_id.setdefault(str(record["run_id"]), []).append(record)
    kept, notes = [], []
    for run_id, group in by_id.items():
        group = sorted(group, key=lambda r: (rank.get(r["status"], 9), _neg_time(r.get("finished_at"))))
        kept.append(group[0])
        if len(group) > 1:
            others = ", ".join(f"{r.get('_path')} ({r['status']})" for r in group[1:])
            used = f"{group[0].get('_path')} ({group[0]['status']})"
            message = f"run {run_id}: {len(group)} records; using {used}, set aside {others}"
            warnings.warn(message, stacklevel=3)
            notes.append(message)
    return kept, notes


def _neg_time(stamp: Any) -> str:
    """Sort key putting later ISO timestamps first."""
    text = str(stamp or "")
    return "".join(chr(0x10FFFF - ord(ch)) for ch in text)


def read_expected(path: str | os.PathLike) -> dict[str, str]:
    """Expected run ids from a file: one ``run_id [name]`` per line, ``#`` comments."""
    expected: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            run_id, *name = line.split(maxsplit=1)
            expected[run_id] = name[0] if name else ""
    return expected


def _as_expected(expected: Iterable[str] | Mapping[str, str] | None) -> dict[str, str] | None:
    """Normalise the expected runs to ``{run_id: name}``."""
    if expected is None:
        return None
    if isinstance(expected, Mapping):
        return {str(k): str(v or "") for k, v in expected.items()}
    return {str(run_id): "" for run_id in expected}


# ----------------------------------------------------------------------------- paper numbers


def load_paper(path: str | os.PathLike | None) -> pd.DataFrame:
    """Published numbers in canonical units (% / M params / G FLOPs); a bad row is skipped with a warning."""
    columns = [*PAPER_COLUMNS, "line"]
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
    return ",".join(str(raw.get(c) or "") for c in PAPER_COLUMNS)


def _paper_row(raw: Mapping[str, Any]) -> tuple[dict, str | None]:
    """Validate one CSV row and convert it to canonical units; ``(row, problem)``."""
    if raw.get(None):
        fields = len(PAPER_COLUMNS) + len(raw[None])
        return {}, f"{fields} fields, expected {len(PAPER_COLUMNS)} (quote text that contains commas)"
    values = {c: str(raw.get(c) or "").strip() for c in PAPER_COLUMNS}
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
    value /= PAPER_METRICS[metric][unit]
    canonical_unit = "%" if metric.startswith("top") else "M" if metric.startswith("params") else "G"
    if metric.endswith("_err"):
        metric, value = metric[: -len("_err")], 100.0 - value
    method = _method_code(values["method"])
    return {**values, "method": method, "depth": depth, "metric": metric, "value": value, "unit": canonical_unit}, None


def _method_code(name: str) -> str:
    """Accept code names and the paper's display names (any case) in the paper CSV."""
    lookup = {k.lower(): k for k in list_models()} | {display_name(k).lower(): k for k in list_models()}
    return lookup.get(name.lower(), name)


def paper_lookup(paper: pd.DataFrame) -> dict[tuple, tuple[float, str]]:
    """``(method, backbone, depth, dataset, metric) -> (value, source)``; a later row wins, with a warning."""
    table: dict[tuple, tuple[float, str, int]] = {}
    for row in paper.itertuples(index=False):
        key = (row.method, row.backbone, int(row.depth), row.dataset, row.metric)
        if key in table:
            warnings.warn(
                f"paper numbers: line {row.line} overrides line {table[key][2]} for {'/'.join(map(str, key))}",
                stacklevel=2,
            )
        table[key] = (float(row.value), str(row.source), int(row.line))
    return {key: (value, source) for key, (value, source, _) in table.items()}


# ----------------------------------------------------------------------------- aggregation


def with_default_options(config: Mapping[str, Any]) -> dict:
    """``model_opts`` completed with the method's defaults for its backbone.

    A grid that spells out a default (``cell: dsu``) and one that leaves it out built the same model: both must
    land on one row, and a label should read ``cell=dsu``, not "default". Unknown methods are left as they are.
    """
    from .models import model_options

    try:
        defaults = model_options(str(config.get("method")), str(config.get("backbone") or "cifar"))
    except ValueError:
        return dict(config)
    defaults.pop("drop_path", None)  # a recipe field, at the config's top level
    return {**config, "model_opts": {**defaults, **(config.get("model_opts") or {})}}


def build_frame(records: Sequence[dict]) -> tuple[pd.DataFrame, list[str]]:
    """The per-run frame plus ``row_key`` (config without seed and dataset) and the config columns."""
    records = [{**r, "config": with_default_options(r.get("config") or {})} for r in records]
    frame = records_frame(records)
    frame["row_key"] = [
        config_key(r.get("config") or {}, ignore=NON_IDENTIFYING_KEYS | set(DATASET_KEYS)) for r in records
    ]
    for column in NUMERIC:
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    config_cols: list[str] = []
    for record in records:
        for key in flatten_config(record.get("config") or {}):
            if key not in config_cols:
                config_cols.append(key)
    for column in ("method", "backbone", "depth", "dataset", "seed", "grid"):
        if column not in frame:
            frame[column] = np.nan
    return frame, config_cols


def _seeds_per_grid(frame: pd.DataFrame) -> dict[Any, int]:
    """Distinct seeds per grid over every record (any status): the seeds each configuration should have."""
    grids = frame["grid"].fillna("")
    return frame.groupby(grids, dropna=False)["seed"].nunique().to_dict()


def aggregate(frame: pd.DataFrame, config_cols: Sequence[str]) -> pd.DataFrame:
    """One row per configuration (``config_key``): mean/std/n over completed seeds, counts per status."""
    seeds_in_grid = _seeds_per_grid(frame) if len(frame) else {}
    rows = []
    for key, group in frame.groupby("config_key", sort=False, dropna=False):
        done = group[group["status"] == "completed"]
        row: dict[str, Any] = {col: group[col].iloc[0] for col in config_cols if col in group and col != "seed"}
        for column in ("method", "backbone", "depth", "dataset"):
            row.setdefault(column, group[column].iloc[0])
        row.update(config_key=key, row_key=group["row_key"].iloc[0], grid=group["grid"].iloc[0])
        row["n"] = len(done)
        row["n_expected"] = max([seeds_in_grid.get(g, 0) for g in group["grid"].fillna("")] + [len(done)])
        row["seeds"] = " ".join(_value_text(s) for s in sorted(done["seed"].dropna().unique()))
        for status in STATUS_ORDER:
            row[f"n_{status}"] = int((group["status"] == status).sum())
        for metric in ("top1_final", "top1_best", "top5_final", "top5_best"):
            values = done[metric].dropna()
            row[f"{metric}_mean"] = values.mean() if len(values) else np.nan
            row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else np.nan
        cost_rows = done if len(done) else group
        row["params_M"] = cost_rows["params"].median() / 1e6
        row["flops_G"] = cost_rows["flops"].median() / 1e9
        row["train_samples_per_s"] = done["train_samples_per_s"].mean()
        row["infer_samples_per_s"] = done["infer_samples_per_s"].mean()
        rows.append(row)
    agg = pd.DataFrame(rows)
    if agg.empty:
        return agg
    return agg.loc[sorted(agg.index, key=lambda i: _row_rank(agg.loc[i]))].reset_index(drop=True)


def _row_rank(row: pd.Series) -> tuple:
    """Sort key of an aggregated row: method (paper order), backbone, depth, dataset."""
    return (method_rank(row["method"]), str(row["backbone"]), _sortable(row["depth"]), _dataset_rank(row["dataset"]))


def _dataset_rank(dataset: Any) -> tuple[int, str]:
    """Sort key: CIFAR-10, CIFAR-100, ImageNet, synthetic, then others."""
    order = list(DATASET_NAMES)
    return (order.index(dataset), "") if dataset in DATASET_NAMES else (len(order), str(dataset))


def _sortable(value: Any) -> float:
    """A number for sorting, missing last."""
    return float(value) if _finite(value) else float("inf")


def add_references(agg: pd.DataFrame, paper: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Add the paper's numbers, ours minus paper (Δ), and top-1 gain over ResNet (ours and paper)."""
    agg = agg.copy()
    if agg.empty:
        return agg
    lookup = paper_lookup(paper)
    head = f"top1_{metric}_mean"
    for name, paper_metric in (
        ("top1", "top1"),
        ("top5", "top5"),
        ("params_M", "params"),
        ("flops_G", "flops"),
        ("gain", "top1_gain"),
    ):
        found = [lookup.get((*_paper_key(row), paper_metric)) for row in agg.itertuples(index=False)]
        agg[f"paper_{name}"] = [f[0] if f else np.nan for f in found]
        agg[f"paper_{name}_source"] = [f[1] if f else "" for f in found]
    agg["paper_gain"] = [
        g if _finite(g) else _derived_gain(lookup, _paper_key(row))
        for g, row in zip(agg["paper_gain"], agg.itertuples(index=False))
    ]
    agg["delta_top1"] = agg[head] - agg["paper_top1"]
    agg["delta_top5"] = agg[f"top5_{metric}_mean"] - agg["paper_top5"]
    agg["gain"] = [_gain(agg, i, head) for i in agg.index]
    return agg


def _paper_key(row: Any) -> tuple:
    """``(method, backbone, depth, dataset)`` of an aggregated row."""
    depth = int(row.depth) if _finite(row.depth) else None
    return (row.method, row.backbone, depth, row.dataset)


def _derived_gain(lookup: Mapping[tuple, tuple[float, str]], key: tuple) -> float:
    """Paper top-1 of the method minus paper ResNet top-1, when both come from one source.

    The source is the ``source`` text before any ``:`` (``DIANet README: ...``)."""
    method, rest = key[0], key[1:]
    ours, base = lookup.get((method, *rest, "top1")), lookup.get(("none", *rest, "top1"))
    if method == "none" or not ours or not base or _source_name(ours[1]) != _source_name(base[1]):
        return np.nan
    return ours[0] - base[0]


def _source_name(source: str) -> str:
    """``DIANet README`` from ``DIANet README: ResNet-164 CIFAR-100 (mean of 5 runs)``."""
    return source.split(":", 1)[0].strip().lower()


def _gain(agg: pd.DataFrame, index: int, head: str) -> float:
    """Our headline top-1 minus our ResNet's on the same backbone, depth, block, dataset and epochs."""
    row = agg.loc[index]
    if row["method"] == "none" or not _finite(row[head]):
        return np.nan
    mask = (agg["method"] == "none") & agg[head].notna()
    for column in GAIN_MATCH:
        if column in agg:
            mask &= (agg[column] == row[column]) | (agg[column].isna() & pd.isna(row[column]))
    base = agg[mask].sort_values("n", ascending=False)
    return row[head] - base[head].iloc[0] if len(base) else np.nan


def variant_labels(agg: pd.DataFrame, config_cols: Sequence[str], skip_opts: bool = False) -> pd.Series:
    """Display name per row, with ``[key=value]`` for config fields that differ within its method and model."""
    columns = [c for c in config_cols if c in agg and c not in NON_IDENTIFYING_KEYS and c not in AXIS_KEYS]
    if skip_opts:
        columns = [c for c in columns if not c.startswith("opt.")]
    labels = pd.Series("", index=agg.index, dtype=object)
    for _, group in agg.groupby(["method", "backbone", "depth"], sort=False, dropna=False):
        varying = [c for c in columns if _n_distinct(group[c]) > 1]
        for index, row in group.iterrows():
            suffix = ", ".join(f"{c.removeprefix('opt.')}={_option_text(row[c])}" for c in varying)
            labels[index] = method_name(row["method"]) + (f" [{suffix}]" if suffix else "")
    return labels


# ----------------------------------------------------------------------------- tables


@dataclass
class Table:
    """A report table: display cells for Markdown/LaTeX and numeric rows for CSV."""

    name: str
    title: str
    notes: list[str]
    header: list[tuple[str, str]]  # (group, column); group "" when ungrouped
    cells: list[list[str]]
    bold: list[list[bool]]
    data: pd.DataFrame = field(repr=False)


# A display cell: (text, numeric value, "max" | "min" | None for which is best).
Cell = tuple[str, float, str | None]


def _cell(text: str, value: Any = np.nan, better: str | None = None) -> Cell:
    """One display cell."""
    return (text, float(value) if _finite(value) else np.nan, better)


def _assemble(
    name: str, title: str, notes: list[str], rows: list[dict[tuple[str, str], Cell]], data: pd.DataFrame
) -> Table:
    """Order columns, drop columns empty on every row, bold the best value per column."""
    header: list[tuple[str, str]] = []
    for row in rows:
        header += [col for col in row if col not in header]
    header = [col for col in header if any(row.get(col, (MISSING,))[0] != MISSING for row in rows)]
    cells = [[row.get(col, _cell(MISSING))[0] for col in header] for row in rows]
    bold = [[False] * len(header) for _ in rows]
    for j, col in enumerate(header):
        better = next((row[col][2] for row in rows if col in row and row[col][2]), None)
        values = [row[col][1] if col in row else np.nan for row in rows]
        finite = [v for v in values if _finite(v)]
        if better and len(set(finite)) >= 2:  # nothing to single out when every value is equal
            best = max(finite) if better == "max" else min(finite)
            for i, value in enumerate(values):
                bold[i][j] = _finite(value) and abs(value - best) <= 1e-9 * max(1.0, abs(best))
    return Table(name, title, notes, header, cells, bold, data)


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
            "Paper: published value (paper_results.csv); Δ = ours (headline mean) − paper, in points. "
            "Gain = top-1 minus ResNet's at the same depth and recipe."
        )
    notes += [
        "Params in M (10⁶, exact count), FLOPs in G (10⁹, one multiply-add = one FLOP); "
        "samples/s: training throughput. Published costs may use other counters (see the CSV's source column).",
        "Bold: best per column (highest accuracy and samples/s, fewest params and FLOPs).",
    ]
    return notes


def _accuracy_cells(row: pd.Series, metric: str, group: str = "") -> dict[tuple[str, str], Cell]:
    """Headline and other top-1 (mean ± std) and n."""
    other = "final" if metric == "best" else "best"
    n = int(row["n"])
    cells = {}
    for which in (metric, other):
        mean, std = row[f"top1_{which}_mean"], row[f"top1_{which}_std"]
        cells[(group, f"Top-1 {which} (%)")] = _cell(fmt_mean_std(mean, std, n), mean, "max")
    cells[(group, "n")] = _cell(f"{n}/{int(row['n_expected'])}")
    return cells


def _paper_cells(row: pd.Series, group: str = "") -> dict[tuple[str, str], Cell]:
    """Paper top-1, Δ, and the top-1 gain over ResNet (ours and the paper's)."""
    return {
        (group, "Paper (%)"): _cell(fmt_number(row["paper_top1"])),
        (group, "Δ (pp)"): _cell(fmt_number(row["delta_top1"], signed=True)),
        (group, "Gain (pp)"): _cell(fmt_number(row["gain"], signed=True)),
        (group, "Paper gain (pp)"): _cell(fmt_number(row["paper_gain"], signed=True)),
    }


def _cost_cells(row: pd.Series, group: str = "", paper: bool = True) -> dict[tuple[str, str], Cell]:
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
    "top1_best_mean",
    "top1_best_std",
    "top1_final_mean",
    "top1_final_std",
    "top5_best_mean",
    "top5_best_std",
    "top5_final_mean",
    "top5_final_std",
    "paper_top1",
    "delta_top1",
    "paper_top5",
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
)


def _csv_frame(agg: pd.DataFrame, labels: pd.Series, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Numeric rows for a table's CSV: identity, aggregates, paper numbers, counts."""
    data = agg.assign(label=labels)
    columns = [c for c in ("label", *extra, *CSV_COLUMNS[1:]) if c in data]
    return data[list(dict.fromkeys(columns))].reset_index(drop=True)


def cifar_table(agg: pd.DataFrame, config_cols: Sequence[str], metric: str = "best") -> Table | None:
    """Methods x {CIFAR-10, CIFAR-100} on the CIFAR ResNet (ResNet-164 in the paper)."""
    if agg.empty:
        return None
    sub = agg[(agg["backbone"] == "cifar") & agg["dataset"].isin(["cifar10", "cifar100"])]
    if sub.empty:
        return None
    labels = variant_labels(sub, config_cols)
    datasets = [d for d in ("cifar10", "cifar100") if (sub["dataset"] == d).any()]
    rows = []
    for row_key in dict.fromkeys(sub["row_key"]):
        group = sub[sub["row_key"] == row_key]
        first = group.iloc[0]
        cells = {("", "Method"): _cell(labels[group.index[0]]), ("", "Model"): _cell(model_name(first["depth"]))}
        for dataset in datasets:
            match = group[group["dataset"] == dataset]
            if match.empty:
                continue
            title = dataset_name(dataset)
            cells |= _accuracy_cells(match.iloc[0], metric, title) | _paper_cells(match.iloc[0], title)
            cells |= _cost_cells(match.iloc[0], title)
        rows.append(cells)
    title = "CIFAR: top-1 accuracy (%) of each method on the CIFAR ResNet"
    return _assemble("cifar", title, _notes(metric), rows, _csv_frame(sub, labels))


def imagenet_table(agg: pd.DataFrame, config_cols: Sequence[str], metric: str = "best") -> Table | None:
    """Methods on ImageNet ResNet-50/101: top-1 and top-5."""
    if agg.empty:
        return None
    sub = agg[(agg["backbone"] == "imagenet") & (agg["dataset"] == "imagenet")]
    if sub.empty:
        return None
    sub = sub.loc[sorted(sub.index, key=lambda i: (_sortable(sub.at[i, "depth"]), method_rank(sub.at[i, "method"])))]
    labels = variant_labels(sub, config_cols)
    rows = []
    for index, row in sub.iterrows():
        cells = {("", "Method"): _cell(labels[index]), ("", "Model"): _cell(model_name(row["depth"]))}
        cells |= _accuracy_cells(row, metric)
        top5, std5 = row[f"top5_{metric}_mean"], row[f"top5_{metric}_std"]
        cells[("", f"Top-5 {metric} (%)")] = _cell(fmt_mean_std(top5, std5, int(row["n"])), top5, "max")
        cells |= _paper_cells(row)
        cells[("", "Paper top-5 (%)")] = _cell(fmt_number(row["paper_top5"]))
        cells[("", "Δ top-5 (pp)")] = _cell(fmt_number(row["delta_top5"], signed=True))
        cells |= _cost_cells(row)
        rows.append(cells)
    title = "ImageNet: top-1 and top-5 accuracy (%) on ResNet-50/101"
    return _assemble("imagenet", title, _notes(metric), rows, _csv_frame(sub, labels))


def ablation_table(agg: pd.DataFrame, config_cols: Sequence[str], metric: str = "best") -> Table | None:
    """One row per DLA setting (the model options that differ between DLA runs)."""
    sub, opts = _ablation_rows(agg, config_cols)
    if sub is None:
        return None
    labels = variant_labels(sub, config_cols, skip_opts=True)
    rows = []
    for index, row in sub.iterrows():
        cells = {
            ("", "Method"): _cell(labels[index]),
            ("", "Model"): _cell(model_name(row["depth"])),
            ("", "Dataset"): _cell(dataset_name(row["dataset"])),
        }
        cells |= {("", opt.removeprefix("opt.")): _cell(_option_text(row[opt])) for opt in opts}
        cells |= _accuracy_cells(row, metric) | _cost_cells(row, paper=False)
        rows.append(cells)
    notes = [
        f"Rows: DLA settings; columns {', '.join(o.removeprefix('opt.') for o in opts)} are the model options "
        "that differ between them.",
        *_notes(metric, paper=False),
    ]
    title = "DSU ablation: top-1 accuracy (%) per DLA setting"
    return _assemble("ablation_dsu", title, notes, rows, _csv_frame(sub, labels, extra=opts))


def _ablation_rows(agg: pd.DataFrame, config_cols: Sequence[str]) -> tuple[pd.DataFrame | None, list[str]]:
    """DLA rows of every (method, model, dataset) run with more than one option setting, and the varying options."""
    if agg.empty:
        return None, []
    dla = agg[agg["method"].isin(DLA_METHODS)]
    opt_cols = [c for c in config_cols if c.startswith("opt.") and c in dla]
    keep: list[int] = []
    for _, group in dla.groupby(["method", "backbone", "depth", "dataset"], sort=False, dropna=False):
        if len(group[opt_cols].map(_value_text).drop_duplicates()) > 1:
            keep += list(group.index)
    sub = dla.loc[keep]
    opts = [c for c in opt_cols if _n_distinct(sub[c]) > 1]
    if sub.empty or not opts:
        return None, []
    order = sorted(sub.index, key=lambda i: (_dataset_rank(sub.at[i, "dataset"]), _row_rank(sub.loc[i])))
    return sub.loc[order], opts


def all_runs_table(agg: pd.DataFrame, config_cols: Sequence[str], metric: str = "best") -> Table | None:
    """Every configuration of every grid, with its run counts per status."""
    if agg.empty:
        return None
    labels = variant_labels(agg, config_cols)
    rows = []
    for index, row in agg.iterrows():
        cells = {
            ("", "Method"): _cell(labels[index]),
            ("", "Grid"): _cell(_value_text(row["grid"])),
            ("", "Model"): _cell(f"{model_name(row['depth'])} ({_value_text(row['backbone'])})"),
            ("", "Dataset"): _cell(dataset_name(row["dataset"])),
            ("", "Runs"): _cell(_status_counts(row)),
        }
        cells |= _accuracy_cells(row, metric)
        top5, std5 = row[f"top5_{metric}_mean"], row[f"top5_{metric}_std"]
        cells[("", f"Top-5 {metric} (%)")] = _cell(fmt_mean_std(top5, std5, int(row["n"])), top5, "max")
        cells |= _cost_cells(row, paper=False)
        rows.append(cells)
    notes = ["One row per configuration (seeds aggregated) across every grid given.", *_notes(metric, paper=False)]
    return _assemble("all_runs", "All configurations", notes, rows, _csv_frame(agg, labels))


def _status_counts(row: Mapping[str, Any]) -> str:
    """``3 completed, 1 failed``."""
    parts = [f"{int(row[f'n_{s}'])} {s}" for s in STATUS_ORDER if int(row[f"n_{s}"])]
    return ", ".join(parts) or "none"


def _md_escape(text: str) -> str:
    """Make text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table) -> str:
    """A Markdown table with a bold title and the notes as a caption."""
    names = [f"{g} {c}".strip() for g, c in table.header]
    aligns = [":--" if c in ("Method", "Model", "Dataset", "Grid", "Runs") else "--:" for _, c in table.header]
    lines = [f"**{table.title}**", ""] + [f"- {note}" for note in table.notes] + [""]
    lines.append("| " + " | ".join(_md_escape(n) for n in names) + " |")
    lines.append("| " + " | ".join(aligns) + " |")
    for cells, bold in zip(table.cells, table.bold):
        texts = [f"**{_md_escape(t)}**" if b else _md_escape(t) for t, b in zip(cells, bold)]
        lines.append("| " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "[": "{[}",
    "]": "{]}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "–": "--",
    "−": "$-$",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "⁶": r"\textsuperscript{6}",
    "⁹": r"\textsuperscript{9}",
}


def latex_escape(text: Any) -> str:
    """Escape LaTeX specials (``_ % & $ # { } ~ ^ \\``) and map ``± Δ –`` to LaTeX."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(table: Table) -> str:
    """A booktabs ``table`` float: grouped headers with cmidrules, best values in ``\\textbf``."""
    align = "".join("l" if c in ("Method", "Model", "Dataset", "Grid", "Runs") else "r" for _, c in table.header)
    caption = latex_escape(table.title + ". " + " ".join(table.notes))
    lines = [
        "% Generated by lai_bench.report. Needs \\usepackage{booktabs} and \\usepackage{graphicx}.",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{caption}}}",
        f"\\label{{tab:{table.name.replace('_', '-')}}}",
        "\\resizebox{\\linewidth}{!}{%",
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
    ]
    groups = _header_groups(table.header)
    if any(name for name, _, _ in groups):
        spans = [
            f"\\multicolumn{{{n}}}{{c}}{{{latex_escape(name)}}}" if name else " & ".join([""] * n)
            for name, _, n in groups
        ]
        lines.append(" & ".join(spans) + " \\\\")
        lines.append(" ".join(f"\\cmidrule(lr){{{s + 1}-{s + n}}}" for name, s, n in groups if name))
    lines.append(" & ".join(latex_escape(c) for _, c in table.header) + " \\\\")
    lines.append("\\midrule")
    for cells, bold in zip(table.cells, table.bold):
        texts = [f"\\textbf{{{latex_escape(t)}}}" if b else latex_escape(t) for t, b in zip(cells, bold)]
        lines.append(" & ".join(texts) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}%", "}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _header_groups(header: Sequence[tuple[str, str]]) -> list[tuple[str, int, int]]:
    """Runs of equal group names: ``(name, first column, width)``."""
    groups: list[tuple[str, int, int]] = []
    for j, (group, _) in enumerate(header):
        if groups and groups[-1][0] == group:
            name, start, width = groups[-1]
            groups[-1] = (name, start, width + 1)
        else:
            groups.append((group, j, 1))
    return groups


def write_table(table: Table, folder: Path) -> list[Path]:
    """Write ``<name>.md``, ``<name>.tex`` and ``<name>.csv``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{table.name}.{ext}" for ext in ("md", "tex", "csv")]
    paths[0].write_text(to_markdown(table), encoding="utf-8")
    paths[1].write_text(to_latex(table), encoding="utf-8")
    table.data.to_csv(paths[2], index=False)
    return paths


# ----------------------------------------------------------------------------- status


def status_frame(frame: pd.DataFrame, expected: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per run (and per expected run without a record): status and its detail."""
    rows = []
    for row in frame.itertuples(index=False):
        detail = ""
        if row.status == "failed":
            detail = error_line(row.error) or "(no error text)"
        elif row.status == "diverged":
            detail = f"diverged at epoch {_value_text(row.diverged_epoch)}"
        elif row.status == "running":
            detail = f"{int(row.epochs_done)} epoch(s) recorded, started {_value_text(row.started_at)}"
        rows.append(
            {
                "run_id": row.run_id,
                "name": row.name,
                "grid": row.grid,
                "status": row.status,
                "detail": detail,
                "path": row.path,
            }
        )
    present = set(frame["run_id"].astype(str))
    for run_id, name in (expected or {}).items():
        if run_id not in present:
            rows.append(
                {"run_id": run_id, "name": name, "grid": "", "status": "missing", "detail": "no record", "path": ""}
            )
    return pd.DataFrame(rows, columns=["run_id", "name", "grid", "status", "detail", "path"])


def status_markdown(
    frame: pd.DataFrame,
    agg: pd.DataFrame,
    skipped: Sequence[str],
    expected: Mapping[str, str] | None = None,
    sources: Sequence[str] = (),
) -> str:
    """The run-status report: counts, failed/diverged/running/missing runs, short seeds, skipped files."""
    runs = status_frame(frame, expected)
    lines = ["# Run status", ""]
    if sources:
        lines += [f"Results: {', '.join(map(str, sources))}", ""]
    lines += [f"{len(frame)} run record(s) loaded; {len(skipped)} file(s) skipped or set aside.", ""]
    lines += _counts_table(frame, expected)
    sections = [
        ("Failed runs", runs[runs["status"] == "failed"], "error"),
        ("Diverged runs", runs[runs["status"] == "diverged"], "epoch"),
        ("Running (incomplete) runs", runs[runs["status"] == "running"], "progress"),
        ("Missing runs (expected, no record)", runs[runs["status"] == "missing"], "detail"),
    ]
    for title, rows, what in sections:
        if len(rows):
            lines += ["", f"## {title}", "", f"| run_id | name | {what} |", "| :-- | :-- | :-- |"]
            lines += [
                f"| {r.run_id} | {_md_escape(_value_text(r.name))} | {_md_escape(r.detail)} |"
                for r in rows.itertuples()
            ]
    if expected is not None and not len(runs[runs["status"] == "missing"]):
        lines += ["", f"All {len(expected)} expected runs have a record."]
    short = agg[agg["n"] < agg["n_expected"]] if len(agg) else agg
    if len(short):
        lines += [
            "",
            "## Configurations with fewer completed seeds than their grid",
            "",
            "| method | model | dataset | grid | n completed / seeds in grid | seeds completed | runs |",
            "| :-- | :-- | :-- | :-- | --: | :-- | :-- |",
        ]
        for _, r in short.iterrows():
            lines.append(
                f"| {method_name(r['method'])} | {model_name(r['depth'])} | {dataset_name(r['dataset'])} | "
                f"{_value_text(r['grid'])} | {int(r['n'])}/{int(r['n_expected'])} | {r['seeds'] or MISSING} | "
                f"{_status_counts(r)} |"
            )
    if skipped:
        lines += ["", "## Files skipped or set aside", ""] + [f"- {_md_escape(m)}" for m in skipped]
    return "\n".join(lines) + "\n"


def _counts_table(frame: pd.DataFrame, expected: Mapping[str, str] | None) -> list[str]:
    """Markdown rows: runs per status for each grid, and in total."""
    header = ["grid", *STATUS_ORDER, "total"]
    lines = ["| " + " | ".join(header) + " |", "| :-- |" + " --: |" * (len(header) - 1)]
    grids = frame["grid"].fillna(MISSING).astype(str)
    for grid in [*sorted(grids.unique()), "all"]:
        part = frame if grid == "all" else frame[grids == grid]
        counts = [int((part["status"] == s).sum()) for s in STATUS_ORDER]
        lines.append(f"| {grid} | " + " | ".join(map(str, counts)) + f" | {len(part)} |")
    if expected is not None:
        present = set(frame["run_id"].astype(str))
        missing = sum(run_id not in present for run_id in expected)
        lines += ["", f"Expected runs: {len(expected)}; with a record: {len(expected) - missing}; missing: {missing}."]
    return lines


# ----------------------------------------------------------------------------- figures


def _new_figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list]:
    """A figure on the Agg canvas (no pyplot state) and its axes."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def save_figure(fig: Figure, folder: Path, stem: str) -> list[Path]:
    """Write ``<stem>.png`` (150 dpi) and ``<stem>.pdf``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.png", folder / f"{stem}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=150)
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
            yerr=std if _finite(std) else None,
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
    contexts = {(r.backbone, int(r.depth), r.dataset) for r in sub.itertuples() if _finite(r.depth)}
    ours_x = {
        (r.method, r.backbone, int(r.depth), r.dataset): getattr(r, column)
        for r in sub.itertuples()
        if _finite(r.depth)
    }
    points = []
    for (method, backbone, depth, dataset, metric), (value, _) in paper.items():
        if metric != "top1" or (backbone, depth, dataset) not in contexts:
            continue
        key = (method, backbone, depth, dataset)
        px = paper.get((*key, paper_metric), (ours_x.get(key, np.nan), ""))[0]
        if _finite(px):
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
        first.index, key=lambda k: (method_rank(first.at[k, "method"]), _sortable(first.at[k, "depth"]), labels[k])
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
    sub, opts = _ablation_rows(agg, config_cols)
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
        f"{names[i]}: " + ", ".join(f"{o.removeprefix('opt.')}={_option_text(part.at[i, o])}" for o in opts)
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


# ----------------------------------------------------------------------------- the report


def build_report(
    results_dirs: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    paper: str | os.PathLike | None = None,
    metric: str = "best",
    expected: Iterable[str] | Mapping[str, str] | None = None,
) -> dict[str, list[Path]]:
    """Write tables, status and figures for the records under ``results_dirs``; return the paths by kind."""
    if metric not in ("best", "final"):
        raise ValueError(f"metric must be 'best' or 'final', not {metric!r}")
    if isinstance(results_dirs, (str, os.PathLike)):
        results_dirs = [results_dirs]
    out, expected = Path(out), _as_expected(expected)
    records, skipped = load_results(results_dirs)
    frame, config_cols = build_frame(records)
    paper_rows = load_paper(paper)
    agg = add_references(aggregate(frame, config_cols), paper_rows, metric)
    written: dict[str, list[Path]] = {"tables": [], "figures": [], "status": [], "index": [], "removed": []}

    builders = (cifar_table, imagenet_table, ablation_table, all_runs_table)
    tables = [t for t in (build(agg, config_cols, metric) for build in builders) if t is not None]
    for table in tables:
        written["tables"] += write_table(table, out / "tables")
    if len(frame):
        (out / "tables").mkdir(parents=True, exist_ok=True)
        frame.drop(columns=["row_key"]).to_csv(out / "tables" / "runs.csv", index=False)
        written["tables"].append(out / "tables" / "runs.csv")

    status = status_markdown(frame, agg, skipped, expected, sources=results_dirs)
    out.mkdir(parents=True, exist_ok=True)
    written["status"] += [out / "status.md", out / "status.csv"]
    written["status"][0].write_text(status, encoding="utf-8")
    status_frame(frame, expected).to_csv(written["status"][1], index=False)

    written["figures"] = _write_figures(records, frame, agg, config_cols, paper_rows, metric, out / "figures")
    written["removed"] = _remove_stale(out, [p for kind in ("tables", "figures") for p in written[kind]])
    index = out / "report.md"
    index.write_text(_index_markdown(tables, status, written["figures"], out), encoding="utf-8")
    written["index"].append(index)
    return written


def _write_figures(
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


# What a previous report may have left that this one did not rewrite (only our own file names).
_GENERATED = {
    "tables": ("cifar.*", "imagenet.*", "ablation_dsu.*", "all_runs.*", "runs.csv"),
    "figures": ("acc_vs_params_*", "acc_vs_flops_*", "curves_*", "ablation_dsu.*"),
}


def _remove_stale(out: Path, written: Sequence[Path]) -> list[Path]:
    """Delete generated tables/figures of an earlier report that this report did not produce."""
    keep = {p.resolve() for p in written}
    stale = [
        path
        for folder, patterns in _GENERATED.items()
        for pattern in patterns
        for path in (out / folder).glob(pattern)
        if path.suffix in (".md", ".tex", ".csv", ".png", ".pdf") and path.resolve() not in keep
    ]
    for path in stale:
        path.unlink()
    return stale


def _index_markdown(tables: Sequence[Table], status: str, figures: Sequence[Path], out: Path) -> str:
    """``report.md``: the status, every table and links to the PNG figures."""
    parts = ["# lai_bench report", "", status.replace("# Run status", "## Run status", 1)]
    parts += ["## Tables", ""] + [to_markdown(t) for t in tables]
    pngs = [p for p in figures if p.suffix == ".png"]
    if pngs:
        parts += ["## Figures", ""] + [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in pngs]
    return "\n".join(parts) + "\n"


def _parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m lai_bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results folder(s) with run records (searched recursively)")
    parser.add_argument("--out", default="analysis", help="output folder (tables/, figures/, status.md, report.md)")
    parser.add_argument(
        "--paper", default=None, help="published numbers CSV (default: analysis/paper_results.csv, if found)"
    )
    parser.add_argument(
        "--metric",
        choices=("best", "final"),
        default="best",
        help="headline top-1: best test epoch (what the DLA code reports) or final epoch",
    )
    parser.add_argument(
        "--expected",
        action="append",
        default=None,
        metavar="FILE",
        help="file of expected runs: one run_id (and optionally its name) per line; repeatable",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Build the report and print where everything was written."""
    args = _parser().parse_args(argv)
    missing = [folder for folder in args.results if not Path(folder).is_dir()]
    if missing:
        print(f"error: no such results folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    paper = args.paper or next((str(p) for p in DEFAULT_PAPER if p.is_file()), None)
    expected = None
    if args.expected:
        expected = {}
        for path in args.expected:
            expected |= read_expected(path)
    written = build_report(args.results, args.out, paper=paper, metric=args.metric, expected=expected)
    print(f"paper numbers: {paper or 'none'}")
    for kind in ("index", "status", "tables", "figures"):
        for path in written[kind]:
            print(f"wrote {path}")
    for path in written["removed"]:
        print(f"removed stale {path}")
    if not written["figures"]:
        print("no figures: no completed runs with metrics")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
