"""The report of a task that has no tables of its own (a plug-in's task): one table per task, one row per
configuration, its headline metric (final and best epoch) as mean ± std over seeds, n, and the costs."""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ..tasks import task_class
from .aggregate import aggregate
from .display import dataset_name, fmt_mean_std, model_name, value_text
from .status import status_counts
from .tables import Table, _assemble, _cell, _labels

# The tasks whose runs the report's own tables show (classification: cifar/imagenet/ablation/all_runs; detection:
# the COCO tables); every other task gets the table built here.
OWN_TABLES = ("classification", "detection")


def task_of(frame: pd.DataFrame) -> pd.Series:
    """Each run's task; records from before tasks existed are classification."""
    if "task" not in frame:
        return pd.Series("classification", index=frame.index)
    return frame["task"].fillna("classification")


def other_task_tables(frame: pd.DataFrame, config_cols: Sequence[str]) -> list[Table]:
    """One table per task outside OWN_TABLES, named after the task."""
    tasks = task_of(frame)
    tables = []
    for name in sorted(set(tasks) - set(OWN_TABLES)):
        try:
            task = task_class(name)
        except ValueError:  # a plug-in this report could not import: its runs are listed in runs.csv only
            continue
        metric, label = task.headline_metric, task.headline_label or task.headline_metric
        keys = [f"{metric}_final", f"{metric}_best"]
        runs = frame[tasks == name].copy()
        for key in keys:
            runs[key] = pd.to_numeric(runs[key], errors="coerce") if key in runs else float("nan")
        agg = aggregate(runs, config_cols, keys)
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
        tables.append(_assemble(name, f"Task {name}", notes, rows, data))
    return tables
