"""Every method row of a table against its baseline and its matched-cost controls: the gain with its 95 % CI, the
test, Holm's correction across the table, the probability of improvement and the minimum detectable effect.

Baselines: the report's one ``gain`` rule (our ResNet of the same backbone, depth, block, dataset and epochs; in a
DLA ablation table the default DLA setting). Controls: a plain ResNet of another depth, at or above the method's
params (FLOPs), the nearest such, from a depth where no method ran (what ``controls:`` in a grid adds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .aggregate import GAIN_MATCH, resnet_baseline, same
from .display import MISSING, fmt_number, method_name, model_name, value_text
from .stats import N_TOO_SMALL, Comparison, compare, holm

# Suffixes of the stable CSV columns of one comparison of metric M: M_gain, M_gain_ci95_low, ...
STAT_COLUMNS = {"": "gain", "_ci95_low": "ci_low", "_ci95_high": "ci_high", "_p_value": "p_value",
                "_p_holm": "p_holm", "_prob_improve": "prob_improve", "_mde": "mde", "_test": "test",
                "_significant": "significant"}
CONTROL_COSTS = {"params": "params_M", "flops": "flops_G"}
CONTROL_NAMES = {"params": "params", "flops": "FLOPs"}
SIGNIFICANT = "†"  # marks a gain whose Holm-corrected p is below 0.05


def resnet_baselines(sub: pd.DataFrame, agg: pd.DataFrame, head: str,
                     match: Sequence[str] = GAIN_MATCH) -> dict[Any, Any]:
    """Row index -> its ResNet baseline's index in ``agg`` (the ``gain`` rule), for the rows that have one."""
    found = {i: resnet_baseline(agg, i, head, match) for i in sub.index}
    return {i: b for i, b in found.items() if b is not None}


def default_baselines(sub: pd.DataFrame, opts: Sequence[str], head: str) -> dict[Any, Any]:
    """Row index -> the index of the default setting of its method, model and dataset (DLA ablation tables)."""
    from ..models import default_backbone
    from ..models.registry import resolved_options

    out = {}
    for _, group in sub.groupby(["method", "backbone", "depth", "dataset"], sort=False, dropna=False):
        first = group.iloc[0]
        try:
            defaults = resolved_options(str(first["method"]), str(first["backbone"] or default_backbone()), {})
        except ValueError:
            continue
        default = [i for i, row in group.iterrows() if pd.notna(row[head]) and all(
            value_text(row[o]) == value_text(defaults.get(o.removeprefix("opt."), row[o])) for o in opts)]
        if default:
            out |= {i: default[0] for i in group.index if i != default[0]}
    return out


def matched_controls(sub: pd.DataFrame, agg: pd.DataFrame, head: str) -> dict[str, dict[Any, Any]]:
    """``{"params": {row: control}, "flops": {...}}``: for each method row, the plain ResNet of the same backbone,
    block, dataset and epochs, from a depth where no method ran, with the fewest params (FLOPs) at or above the
    method's."""
    out: dict[str, dict[Any, Any]] = {kind: {} for kind in CONTROL_COSTS}
    match = [c for c in GAIN_MATCH if c != "depth"]
    for i, row in sub.iterrows():
        if row["method"] == "none" or pd.isna(row[head]):
            continue
        group = agg[same(agg, row, match)]
        method_depths = set(group.loc[group["method"] != "none", "depth"])
        plain = group[(group["method"] == "none") & ~group["depth"].isin(method_depths) & group[head].notna()]
        for kind, cost in CONTROL_COSTS.items():
            above = plain[plain[cost] >= row[cost]] if pd.notna(row[cost]) else plain.iloc[0:0]
            if len(above):
                out[kind][i] = above.sort_values([cost, "n"], ascending=[True, False], kind="stable").index[0]
    return out


def seed_values(frame: pd.DataFrame, index: Any, metric: str) -> dict:
    """A row's values of ``metric`` by seed (``aggregate`` keeps them)."""
    values = frame.at[index, "seed_values"] if "seed_values" in frame else None
    return dict(values.get(metric, {})) if isinstance(values, Mapping) else {}


def with_comparisons(sub: pd.DataFrame, agg: pd.DataFrame, metrics: Sequence[str], baselines: Mapping[Any, Any],
                     controls: Mapping[str, Mapping[Any, Any]] | None = None) -> pd.DataFrame:
    """``sub`` with every comparison's columns: ``M_gain*`` against the baseline, ``M_gain_params*`` and
    ``M_gain_flops*`` against the controls, p-values Holm-corrected per metric across all of one table's rows."""
    out = sub.copy()
    controls = controls or {}
    out["baseline"] = [_label_of(agg, baselines.get(i)) for i in out.index]
    out["baseline_config_key"] = [_key_of(agg, baselines.get(i)) for i in out.index]
    for kind in CONTROL_COSTS:
        found = controls.get(kind, {})
        out[f"control_{kind}"] = [_label_of(agg, found.get(i), kind) for i in out.index]
        out[f"control_{kind}_config_key"] = [_key_of(agg, found.get(i)) for i in out.index]
    for metric in metrics:
        family: list[tuple[str, Any, Comparison]] = []
        pairs = [("", baselines), *((f"_{kind}", controls.get(kind, {})) for kind in CONTROL_COSTS)]
        for suffix, against in pairs:
            for i in out.index:
                if against.get(i) is not None:
                    comparison = compare(seed_values(out, i, metric), seed_values(agg, against[i], metric))
                    family.append((f"{metric}_gain{suffix}", i, comparison))
        for column in {prefix for prefix, _, _ in family} | {f"{metric}_gain"}:
            for end in STAT_COLUMNS:
                if f"{column}{end}" not in out:
                    out[f"{column}{end}"] = np.nan if end not in ("_test", "_significant") else None
        for (prefix, i, _), corrected in zip(family, holm([c for _, _, c in family])):
            for end, attribute in STAT_COLUMNS.items():
                out.at[i, f"{prefix}{end}"] = getattr(corrected, attribute)
    return out


def _label_of(agg: pd.DataFrame, index: Any, kind: str | None = None) -> str:
    """How a baseline or control row is named in a comparison: ``ResNet-164`` or ``ResNet-191 (params-matched)``."""
    if index is None:
        return ""
    row = agg.loc[index]
    name = model_name(row["depth"], row.get("backbone")) if row["method"] == "none" else method_name(row["method"])
    return f"{name} ({CONTROL_NAMES[kind]}-matched)" if kind else name


def _key_of(agg: pd.DataFrame, index: Any) -> str:
    """The configuration key of a baseline or control row ("" when none)."""
    return "" if index is None else str(agg.at[index, "config_key"])


def control_suffixes(sub: pd.DataFrame) -> dict[Any, str]:
    """`` (params-matched)``, `` (FLOPs-matched)`` or `` (params- and FLOPs-matched)`` for the rows of ``sub`` that
    are another row's control."""
    keys = dict(zip(sub["config_key"], sub.index))
    kinds: dict[Any, list[str]] = {}
    for kind in CONTROL_COSTS:
        for key in sub.get(f"control_{kind}_config_key", pd.Series(dtype=object)).dropna():
            if key in keys and CONTROL_NAMES[kind] not in kinds.setdefault(keys[key], []):
                kinds[keys[key]].append(CONTROL_NAMES[kind])
    return {i: f" ({'- and '.join(names)}-matched)" for i, names in kinds.items()}


def beside_methods(sub: pd.DataFrame) -> pd.DataFrame:
    """``sub`` with each control row moved to just after the last method row it controls."""
    index = list(sub.index)
    keys = dict(zip(sub["config_key"], sub.index))
    for kind in CONTROL_COSTS:
        column = f"control_{kind}_config_key"
        if column not in sub:
            continue
        for i, key in zip(sub.index, sub[column]):
            control = keys.get(key)
            if control is not None and index.index(control) < index.index(i):
                index.remove(control)
                index.insert(index.index(i) + 1, control)
    return sub.loc[index]


def gain_text(row: pd.Series, column: str, digits: int = 2) -> str:
    """``+3.10 ± 0.25†`` (gain ± 95 % CI half-width, † where significant after Holm), ``+0.47 (n too small)``, or
    ``–``."""
    gain = row.get(column)
    if gain is None or pd.isna(gain):
        return MISSING
    text = fmt_number(gain, digits, signed=True)
    if row.get(f"{column}_test") in (None, N_TOO_SMALL) or pd.isna(row.get(f"{column}_ci95_low")):
        return f"{text} ({N_TOO_SMALL})" if row.get(f"{column}_test") == N_TOO_SMALL else text
    half = (row[f"{column}_ci95_high"] - row[f"{column}_ci95_low"]) / 2
    mark = SIGNIFICANT if row.get(f"{column}_significant") is True else ""
    return f"{text} ± {fmt_number(half, digits)}{mark}"


def in_ci_text(row: pd.Series, name: str) -> str:
    """`` (in CI)`` / `` (out of CI)``: whether the published ``name`` lies in our 95 % CI; "" when unknown."""
    inside = row.get(f"paper_{name}_in_ci95")
    if inside is None or (isinstance(inside, float) and np.isnan(inside)):
        return ""
    return " (in CI)" if bool(inside) else " (out of CI)"
