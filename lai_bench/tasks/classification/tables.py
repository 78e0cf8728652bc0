"""Classification's paper tables: CIFAR, ImageNet, ViT, the DSU ablation and all configurations (display text, best
cells, CSV rows), each from the aggregated rows of the classification runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ...summary.aggregate import variant_labels
from ...summary.compare import (
    gain_text,
    in_ci_text,
)
from ...summary.display import (
    MISSING,
    dataset_name,
    finite,
    fmt_mean_std,
    fmt_number,
    method_rank,
    model_name,
    option_text,
    sortable,
    value_text,
)
from ...summary.status import status_counts
from ...summary.tables import (
    Row,
    Table,
    _accuracy_cells,
    _assemble,
    _cell,
    _compared,
    _control_cells,
    _cost_cells,
    _csv_frame,
    _labels,
    _notes,
    _paper_cells,
    _top5_cell,
    with_caveats,
)
from .ablation import ablation_rows
from .chance import chance_levels, chance_text


def cifar_table(agg: pd.DataFrame, config_cols: Sequence[str], metric: str = "best") -> Table | None:
    """Methods x {CIFAR-10, CIFAR-100} on the CIFAR ResNet (ResNet-164 in the paper)."""
    if agg.empty:
        return None
    sub = agg[(agg["backbone"] == "cifar") & agg["dataset"].isin(["cifar10", "cifar100"])]
    if sub.empty:
        return None
    sub = _compared(sub, agg, metric)
    labels = _labels(sub, config_cols)
    datasets = [d for d in ("cifar10", "cifar100") if (sub["dataset"] == d).any()]
    rows = []
    for row_key in dict.fromkeys(sub["row_key"]):
        group = sub[sub["row_key"] == row_key]
        first = group.iloc[0]
        cells = {("", "Method"): _cell(labels[group.index[0]]),
                 ("", "Model"): _cell(model_name(first["depth"], first["backbone"]))}
        for dataset in datasets:
            match = group[group["dataset"] == dataset]
            if match.empty:
                continue
            title = dataset_name(dataset)
            cells |= _accuracy_cells(match.iloc[0], metric, title) | _paper_cells(match.iloc[0], metric, title)
            cells |= _cost_cells(match.iloc[0], title)
        rows.append(cells)
    title = "CIFAR: top-1 accuracy (%) of each method on the CIFAR ResNet"
    return _assemble("cifar", title, _notes(metric), rows, _csv_frame(sub, labels), f"top1_{metric}")


def imagenet_table(agg: pd.DataFrame, config_cols: Sequence[str], metric: str = "best") -> Table | None:
    """Methods on ImageNet ResNet-50/101: top-1 and top-5."""
    if agg.empty:
        return None
    sub = agg[(agg["backbone"] == "imagenet") & (agg["dataset"] == "imagenet")]
    if sub.empty:
        return None
    sub = sub.loc[sorted(sub.index, key=lambda i: (sortable(sub.at[i, "depth"]), method_rank(sub.at[i, "method"])))]
    sub = _compared(sub, agg, metric)
    labels = _labels(sub, config_cols)
    rows = []
    for index, row in sub.iterrows():
        cells = {("", "Method"): _cell(labels[index]), ("", "Model"): _cell(model_name(row["depth"], row["backbone"]))}
        cells |= _accuracy_cells(row, metric) | _top5_cell(row, metric) | _paper_cells(row, metric)
        paper5 = fmt_number(row["paper_top5"])
        cells[("", "Paper top-5 (%)")] = _cell(paper5 + (in_ci_text(row, "top5") if paper5 != MISSING else ""))
        cells[("", "Δ top-5 (pp)")] = _cell(fmt_number(row["delta_top5"], signed=True))
        cells |= _cost_cells(row)
        rows.append(cells)
    title = "ImageNet: top-1 and top-5 accuracy (%) on ResNet-50/101"
    return _assemble("imagenet", title, _notes(metric), rows, _csv_frame(sub, labels), f"top1_{metric}")


def _on_tokens(backbone: Any) -> bool:
    from ...models import backbone_info

    try:
        return backbone_info(str(backbone)).layout.name == "tokens"
    except ValueError:
        return False


def _ema_cells(row: pd.Series) -> Row:
    """The model EMA's top-1 (best and final), for runs whose recipe keeps one (columns dropped otherwise)."""
    cells = {}
    for which in ("best", "final"):
        mean, std = row.get(f"top1_ema_{which}_mean", np.nan), row.get(f"top1_ema_{which}_std", np.nan)
        cells[("", f"EMA top-1 {which} (%)")] = _cell(fmt_mean_std(mean, std, int(row["n"])) if finite(mean)
                                                      else MISSING, mean, "max")
    return cells


def vit_table(agg: pd.DataFrame, config_cols: Sequence[str], metric: str = "best") -> Table | None:
    """Methods on the ViT backbones (DeiT-T/S/B, the CIFAR ViTs), the MRLA paper's DeiT layout: model, params,
    FLOPs, top-1, top-5 and the gain over the plain ViT of the same size."""
    if agg.empty:
        return None
    sub = agg[[_on_tokens(b) for b in agg["backbone"]]]
    if sub.empty:
        return None
    sizes = {"deit_tiny": 0, "deit_small": 1, "deit_base": 2}
    sub = sub.loc[sorted(sub.index, key=lambda i: (str(sub.at[i, "dataset"]), sizes.get(sub.at[i, "backbone"], 9),
                                                   str(sub.at[i, "backbone"]), sortable(sub.at[i, "depth"]),
                                                   method_rank(sub.at[i, "method"])))]
    sub = _compared(sub, agg, metric)
    labels = _labels(sub, config_cols)
    rows = []
    for index, row in sub.iterrows():
        cells = {("", "Method"): _cell(labels[index]), ("", "Model"): _cell(model_name(row["depth"], row["backbone"])),
                 ("", "Dataset"): _cell(dataset_name(row["dataset"])),
                 ("", "Params (M)"): _cell(fmt_number(row["params_M"], 3), row["params_M"], "min"),
                 ("", "FLOPs (G)"): _cell(fmt_number(row["flops_G"], 3), row["flops_G"], "min")}
        cells |= _accuracy_cells(row, metric) | _top5_cell(row, metric) | _ema_cells(row) | _paper_cells(row, metric)
        cells[("", "Train samples/s")] = _cell(fmt_number(row["train_samples_per_s"], 0), row["train_samples_per_s"],
                                               "max")
        rows.append(cells)
    notes = ["Gain = top-1 minus the plain ViT's (DeiT, method none) of the same size, depth and recipe. EMA: the "
             "model EMA of the DeiT recipe, evaluated beside the model every epoch (the headline stays the model's).",
             *_notes(metric)]
    title = "Vision Transformers: top-1 and top-5 accuracy (%), params and FLOPs"
    return _assemble("vit", title, notes, rows, _csv_frame(sub, labels), f"top1_{metric}")


def ablation_table(agg: pd.DataFrame, config_cols: Sequence[str], metric: str = "best") -> Table | None:
    """One row per DLA setting (the model options that differ between DLA runs)."""
    sub, opts = ablation_rows(agg, config_cols)
    if sub is None:
        return None
    sub = _compared(sub, agg, metric, opts)
    labels = variant_labels(sub, config_cols, skip_opts=True)
    rows = []
    for index, row in sub.iterrows():
        cells = {
            ("", "Method"): _cell(labels[index]),
            ("", "Model"): _cell(model_name(row["depth"], row["backbone"])),
            ("", "Dataset"): _cell(dataset_name(row["dataset"])),
        }
        cells |= {("", opt.removeprefix("opt.")): _cell(option_text(row[opt])) for opt in opts}
        cells |= _accuracy_cells(row, metric)
        cells[("", "Δ vs default (pp)")] = _cell(gain_text(row, f"top1_{metric}_gain"))
        cells |= _cost_cells(row, paper=False)
        rows.append(cells)
    notes = [
        f"Rows: DLA settings; columns {', '.join(o.removeprefix('opt.') for o in opts)} are the model options "
        "that differ between them. Δ vs default: top-1 minus the default setting's (the gain of this table).",
        *_notes(metric, paper=False),
    ]
    title = "DSU ablation: top-1 accuracy (%) per DLA setting"
    return _assemble("ablation_dsu", title, notes, rows, _csv_frame(sub, labels, extra=opts), f"top1_{metric}")


def all_runs_table(agg: pd.DataFrame, config_cols: Sequence[str], metric: str = "best") -> Table | None:
    """Every configuration of every grid, with its run counts per status."""
    if agg.empty:
        return None
    everything = _compared(agg, agg, metric)
    labels = _labels(everything, config_cols)
    rows = []
    for index, row in everything.iterrows():
        cells = {
            ("", "Method"): _cell(labels[index]),
            ("", "Grid"): _cell(value_text(row["grid"])),
            ("", "Model"): _cell(f"{model_name(row['depth'], row['backbone'])} ({value_text(row['backbone'])})"),
            ("", "Dataset"): _cell(dataset_name(row["dataset"])),
            ("", "Runs"): _cell(status_counts(row)),
        }
        cells |= _accuracy_cells(row, metric) | _top5_cell(row, metric)
        cells[("", "Gain (pp)")] = _cell(gain_text(row, f"top1_{metric}_gain"))
        cells |= _control_cells(row, metric) | _cost_cells(row, paper=False)
        rows.append(cells)
    notes = ["One row per configuration (seeds aggregated) across every grid given. Gain = top-1 minus our "
             "ResNet's at the same depth and recipe.", *_notes(metric, paper=False)]
    data = _csv_frame(everything, labels)
    return _assemble("all_runs", "All configurations", notes, rows, data, f"top1_{metric}")


TABLE_BUILDERS: tuple[Callable[..., Table | None], ...] = (cifar_table, imagenet_table, vit_table, ablation_table,
                                                          all_runs_table)


def build_tables(agg: pd.DataFrame, config_cols: Sequence[str], metric: str = "best") -> list[Table]:
    """Every paper table the aggregated rows fill, in report order."""
    tables = [t for t in (build(agg, config_cols, metric) for build in TABLE_BUILDERS) if t is not None]
    return [with_caveats(t, agg, synthetic_caveat) for t in tables]


def synthetic_caveat(rows: pd.DataFrame) -> list[str]:
    """The chance level of the synthetic rows among `rows`, as a table note."""
    levels = chance_levels(rows)
    return [f"Synthetic data: {chance_text(levels)} top-1 (balanced classes: 100 / classes); a learnable toy task, "
            "not a benchmark result."] if levels else []
