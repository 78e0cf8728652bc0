"""Run records into frames: one row per run, then one per configuration (mean/std over seeds), ranked and labelled."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import ID_NEUTRAL_DEFAULTS
from ..core.plugins import PluginError, load_plugins
from ..records.store import NON_IDENTIFYING_KEYS, config_key, flatten_config, load_records, records_frame
from .display import (
    MISSING,
    dataset_rank,
    finite,
    method_name,
    method_rank,
    n_distinct,
    option_text,
    real_method,
    sortable,
    value_text,
)
from .paper import COCO_METRICS, derived_gain, paper_lookup
from .stats import mean_ci

STATUS_ORDER = ("completed", "diverged", "failed", "running")
# Config keys that name the table's axes (or follow from the dataset), never a "variant".
AXIS_KEYS = ("method", "backbone", "depth", "dataset", "num_classes")
DATASET_KEYS = ("dataset", "num_classes")
# The reference ResNet for "gain" shares these with the method's row.
GAIN_MATCH = ("backbone", "depth", "block", "dataset", "epochs")
# What a configuration's seeds are averaged over: mean and std of each, per task.
TOP1_METRICS = ("top1_final", "top1_best", "top5_final", "top5_best")
# The model EMA's, where a recipe keeps one (deit): aggregated beside the model's, shown in the ViT table.
EMA_METRICS = ("top1_ema_final", "top1_ema_best", "top5_ema_final")
COCO_RECORD_METRICS = tuple(f"{metric}_{which}" for metric in COCO_METRICS for which in ("final", "best"))
NUMERIC = (
    *TOP1_METRICS,
    *EMA_METRICS,
    *COCO_RECORD_METRICS,
    "best_epoch",
    "params",
    "backbone_params",
    "flops",
    "train_samples_per_s",
    "infer_samples_per_s",
    "infer_images_per_s",
    "peak_memory_bytes",
    "wall_time_s",
    "diverged_epoch",
    "epochs_done",
    "depth",
    "seed",
)


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
    return records, skipped + notes + _load_named_plugins(records)


def _load_named_plugins(records: list[dict]) -> list[str]:
    """Import the plug-ins the records' configs name, so their methods have their display names, order and colour;
    one note per plug-in that cannot be imported (its rows show the registered name as recorded)."""
    notes = []
    for name in sorted({p for r in records for p in (r.get("config") or {}).get("plugins") or ()}):
        try:
            load_plugins([name])
        except PluginError as e:
            notes.append(f"{e}: its runs' rows show their method names as recorded")
    return notes


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


# ----------------------------------------------------------------------------- per run


def with_default_options(config: Mapping[str, Any]) -> dict:
    """``model_opts`` completed with the method's defaults for its backbone.

    A grid that spells out a default (``cell: dsu``) and one that leaves it out built the same model: both must
    land on one row, and a label should read ``cell=dsu``, not "default". An unset option whose meaning depends on
    others reads as what the model built (DLA's ``forward_path=True`` where a cell exists). Unknown methods are left
    as they are.
    """
    from ..models import backbone_info, default_backbone
    from ..models.registry import resolved_options

    given = config.get("model_opts") or {}
    try:
        backbone = str(config.get("backbone") or default_backbone())
        options = resolved_options(str(config.get("method")), backbone, given)
    except ValueError:
        return dict(config)
    if "drop_path" not in given:
        options.pop("drop_path", None)  # a recipe field, at the config's top level
    return {**config, "model_opts": {**backbone_info(config["backbone"]).option_defaults(), **options}}


def without_neutral_defaults(config: Mapping[str, Any]) -> dict:
    """The config without fields added after runs were recorded, where they hold their defaults (``task:
    classification``, ``detector: null``, ...): a new record then reads like the old records of its configuration."""
    return {k: v for k, v in config.items() if k not in ID_NEUTRAL_DEFAULTS or v != ID_NEUTRAL_DEFAULTS[k]}


def build_frame(records: Sequence[dict]) -> tuple[pd.DataFrame, list[str]]:
    """The per-run frame plus ``row_key`` (config without seed and dataset) and the config columns."""
    records = [
        {**r, "config": without_neutral_defaults(with_default_options(r.get("config") or {}))} for r in records
    ]
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


# ----------------------------------------------------------------------------- per configuration


def _seeds_per_grid(frame: pd.DataFrame) -> dict[Any, int]:
    """Distinct seeds per grid over every record (any status): the seeds each configuration should have."""
    grids = frame["grid"].fillna("")
    return frame.groupby(grids, dropna=False)["seed"].nunique().to_dict()


def aggregate(
    frame: pd.DataFrame, config_cols: Sequence[str], metrics: Sequence[str] = TOP1_METRICS
) -> pd.DataFrame:
    """One row per configuration (``config_key``): mean/std/n of ``metrics`` over completed seeds, counts per
    status, costs."""
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
        row["seeds"] = " ".join(value_text(s) for s in sorted(done["seed"].dropna().unique()))
        for status in STATUS_ORDER:
            row[f"n_{status}"] = int((group["status"] == status).sum())
        row["seed_values"] = {}
        for metric in metrics:
            values = done[metric].dropna() if metric in done else pd.Series(dtype=float)
            row[f"{metric}_mean"] = values.mean() if len(values) else np.nan
            row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else np.nan
            row[f"{metric}_ci95_low"], row[f"{metric}_ci95_high"] = mean_ci(values)
            row["seed_values"][metric] = by_seed(done.loc[values.index, "seed"], values)
        cost_rows = done if len(done) else group
        row["params_M"] = cost_rows["params"].median() / 1e6
        row["flops_G"] = cost_rows["flops"].median() / 1e9
        if "backbone_params" in cost_rows:
            row["backbone_params_M"] = cost_rows["backbone_params"].median() / 1e6
        row["train_samples_per_s"] = done["train_samples_per_s"].mean()
        row["infer_samples_per_s"] = done["infer_samples_per_s"].mean()
        if "infer_images_per_s" in done:  # detection records' inference throughput
            row["infer_images_per_s"] = done["infer_images_per_s"].mean()
        rows.append(row)
    agg = pd.DataFrame(rows)
    if agg.empty:
        return agg
    return agg.loc[sorted(agg.index, key=lambda i: row_rank(agg.loc[i]))].reset_index(drop=True)


def by_seed(seeds: pd.Series, values: pd.Series) -> dict[Any, float]:
    """Values keyed by their seed (the pairing key of a comparison); a seed seen again (the same configuration in
    two grids) is keyed apart, so such rows are compared unpaired."""
    out: dict[Any, float] = {}
    for seed, value in zip(seeds, values):
        key = value_text(seed)
        while key in out:
            key += "'"
        out[key] = float(value)
    return out


def row_rank(row: pd.Series) -> tuple:
    """Sort key of an aggregated row: method (paper order), backbone, depth, dataset."""
    return (method_rank(row["method"]), str(row["backbone"]), sortable(row["depth"]), dataset_rank(row["dataset"]))


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
        found = [lookup.get((*paper_key(row), paper_metric)) for row in agg.itertuples(index=False)]
        agg[f"paper_{name}"] = [f[0] if f else np.nan for f in found]
        agg[f"paper_{name}_source"] = [f[1] if f else "" for f in found]
    agg["paper_gain"] = [
        g if finite(g) else derived_gain(lookup, paper_key(row))
        for g, row in zip(agg["paper_gain"], agg.itertuples(index=False))
    ]
    agg["delta_top1"] = agg[head] - agg["paper_top1"]
    agg["delta_top5"] = agg[f"top5_{metric}_mean"] - agg["paper_top5"]
    for name in ("top1", "top5"):  # is the published number inside our 95 % CI of the headline mean?
        (low, high), published = (agg[f"{name}_{metric}_ci95_{end}"] for end in ("low", "high")), agg[f"paper_{name}"]
        inside = (published >= low) & (published <= high)
        agg[f"paper_{name}_in_ci95"] = inside.where(published.notna() & low.notna()).astype(object)
    agg["gain"] = [gain_over_resnet(agg, i, head) for i in agg.index]
    return agg


def paper_key(row: Any) -> tuple:
    """``(method, backbone, depth, dataset)`` of an aggregated row."""
    depth = int(row.depth) if finite(row.depth) else None
    return (row.method, row.backbone, depth, row.dataset)


def gain_over_resnet(agg: pd.DataFrame, index: int, head: str, match: Sequence[str] = GAIN_MATCH) -> float:
    """Our ``head`` metric minus our ResNet's on the same ``match`` columns (backbone, depth, block, dataset and
    epochs), from the ResNet row with the most seeds."""
    base = resnet_baseline(agg, index, head, match)
    return agg.at[index, head] - agg.at[base, head] if base is not None else np.nan


def resnet_baseline(agg: pd.DataFrame, index: Any, head: str, match: Sequence[str] = GAIN_MATCH) -> Any:
    """The index of a row's baseline for ``gain``: our ResNet with the same ``match`` columns and the most seeds;
    None for ResNet rows, rows without ``head`` and rows without such a ResNet."""
    row = agg.loc[index]
    if row["method"] == "none" or not finite(row[head]):
        return None
    mask = (agg["method"] == "none") & agg[head].notna() & same(agg, row, match)
    base = agg[mask].sort_values("n", ascending=False, kind="stable")
    return base.index[0] if len(base) else None


def same(agg: pd.DataFrame, row: pd.Series, columns: Sequence[str]) -> pd.Series:
    """True for the rows that share ``row``'s value (or its missing value) in each of ``columns`` they have."""
    mask = pd.Series(True, index=agg.index)
    for column in columns:
        if column in agg:
            mask &= (agg[column] == row[column]) | (agg[column].isna() & pd.isna(row[column]))
    return mask


def with_real_methods(frame: pd.DataFrame) -> pd.DataFrame:
    """``method`` set to the method each row built, from its ``opt.*`` columns (``dla_l`` + attention=base: dla_b)."""
    if frame.empty or "method" not in frame:
        return frame
    opts = [c for c in frame.columns if str(c).startswith("opt.")]
    options = frame[opts].to_dict("records") if opts else [{}] * len(frame)
    methods = [
        real_method(method, {k.removeprefix("opt."): v for k, v in given.items()})
        for method, given in zip(frame["method"], options)
    ]
    return frame.assign(method=methods)


def variant_labels(agg: pd.DataFrame, config_cols: Sequence[str], skip_opts: bool = False) -> pd.Series:
    """Display name per row, with ``[key=value]`` for config fields that differ within its method and model."""
    columns = [c for c in config_cols if c in agg and c not in NON_IDENTIFYING_KEYS and c not in AXIS_KEYS]
    if skip_opts:
        columns = [c for c in columns if not c.startswith("opt.")]
    labels = pd.Series("", index=agg.index, dtype=object)
    agg = with_real_methods(agg)  # an old dla_l + attention=base row is DLA-B, and its attention no variant
    for _, group in agg.groupby(["method", "backbone", "depth"], sort=False, dropna=False):
        varying = [c for c in columns if n_distinct(group[c]) > 1]
        for index, row in group.iterrows():
            suffix = ", ".join(f"{c.removeprefix('opt.')}={option_text(row[c])}" for c in options_to_show(row, varying))
            labels[index] = method_name(row["method"], row["backbone"]) + (f" [{suffix}]" if suffix else "")
    return labels


def options_to_show(row: pd.Series, columns: Sequence[str]) -> list[str]:
    """``columns`` less the options the row's others imply (DLA's ``forward_path=True`` beside ``cell=dsu``)."""
    from ..models import default_backbone
    from ..models.registry import implied_options

    opts = {c.removeprefix("opt."): row[c] for c in row.index
            if c.startswith("opt.") and value_text(row[c]) != MISSING}
    try:
        implied = implied_options(str(row["method"]), str(row.get("backbone") or default_backbone()), opts)
    except ValueError:  # a method this version does not know
        implied = set()
    return [c for c in columns if c.removeprefix("opt.") not in implied]
