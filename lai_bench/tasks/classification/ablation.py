"""The DSU ablation's rows: the DLA configurations of one model and data set that differ only in DLA's options."""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ...summary.aggregate import row_rank
from ...summary.display import dataset_rank, n_distinct, value_text

DLA_METHODS = ("dla_l", "dla_b")


def ablation_rows(agg: pd.DataFrame, config_cols: Sequence[str]) -> tuple[pd.DataFrame | None, list[str]]:
    """DLA rows of every (method, model, dataset) run with more than one option setting, and the varying options."""
    if agg.empty:
        return None, []
    dla = agg[agg["method"].isin(DLA_METHODS)]
    opt_cols = [c for c in config_cols if c.startswith("opt.") and c in dla]
    keep: list[int] = []
    for _, group in dla.groupby(["method", "backbone", "depth", "dataset"], sort=False, dropna=False):
        if len(group[opt_cols].map(value_text).drop_duplicates()) > 1:
            keep += list(group.index)
    sub = dla.loc[keep]
    opts = [c for c in opt_cols if n_distinct(sub[c]) > 1]
    if sub.empty or not opts:
        return None, []
    order = sorted(sub.index, key=lambda i: (dataset_rank(sub.at[i, "dataset"]), row_rank(sub.loc[i])))
    return sub.loc[order], opts
