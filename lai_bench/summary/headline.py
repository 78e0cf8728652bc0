"""The report of a task that has no tables of its own (a plug-in's task, the default `Task.report`): one table named
after the task, one row per configuration, its headline metric (final and best epoch) as mean ± std over seeds, n,
and the costs."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from .aggregate import aggregate
from .display import dataset_name, fmt_mean_std, model_name, value_text
from .report import ReportContext, ReportPart
from .status import status_counts
from .tables import Table, _assemble, _cell, _labels


def headline_report(task: Any, frame: pd.DataFrame, config_cols: Sequence[str], context: ReportContext) -> ReportPart:
    """The headline table of `task`'s runs (`frame`)."""
    table, agg = headline_table(task.name, task.headline_metric, task.headline_label, frame, config_cols)
    return ReportPart(tables=[table] if table is not None else [], aggregated=agg)


def headline_table(name: str, metric: str, label: str, frame: pd.DataFrame,
                   config_cols: Sequence[str]) -> tuple[Table | None, pd.DataFrame]:
    """One row per configuration of the runs in `frame`: `metric` final and best, n, params."""
    label = label or metric
    keys = [f"{metric}_final", f"{metric}_best"]
    runs = frame.copy()
    for key in keys:
        runs[key] = pd.to_numeric(runs[key], errors="coerce") if key in runs else float("nan")
    agg = aggregate(runs, config_cols, keys)
    if agg.empty:
        return None, agg
    labels = _labels(agg, config_cols)
    rows = []
    for index, row in agg.iterrows():
        n = int(row["n"])
        rows.append({
            ("", "Method"): _cell(labels[index]),
            ("", "Grid"): _cell(value_text(row["grid"])),
            ("", "Model"): _cell(f"{model_name(row['depth'], row['backbone'])} ({value_text(row['backbone'])})"),
            ("", "Dataset"): _cell(dataset_name(row["dataset"])),
            ("", "Runs"): _cell(status_counts(row)),
            ("", f"{label} final"): _cell(fmt_mean_std(row[f"{keys[0]}_mean"], row[f"{keys[0]}_std"], n),
                                          row[f"{keys[0]}_mean"]),
            ("", f"{label} best"): _cell(fmt_mean_std(row[f"{keys[1]}_mean"], row[f"{keys[1]}_std"], n),
                                         row[f"{keys[1]}_mean"]),
            ("", "n"): _cell(f"{n}/{int(row['n_expected'])}"),
            ("", "Params (M)"): _cell(f"{row['params_M']:.3f}", row["params_M"]),
        })
    notes = [f"Task {name}: one row per configuration, {label} of the final and the best epoch as mean ± sample "
             "std over completed seeds, n = completed / seeds in the grid."]
    data = agg.assign(label=labels)[["label", "method", "backbone", "depth", "dataset", "n",
                                     *(f"{k}_{s}" for k in keys for s in ("mean", "std"))]].reset_index(drop=True)
    return _assemble(name, f"Task {name}", notes, rows, data), agg
