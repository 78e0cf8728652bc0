"""Classification's report: the papers' tables (CIFAR, ImageNet, ViT, the DSU ablation, all runs) and figures
(accuracy against params and FLOPs, training curves, the ablation chart) from its runs' rows."""
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ...summary.aggregate import EMA_METRICS, TOP1_METRICS, add_references, aggregate
from ...summary.report import ReportContext, ReportPart
from .figures import write_figures
from .tables import build_tables

# What earlier reports of this task wrote: a later report removes those it did not rewrite.
TABLE_FILES = ("cifar.*", "imagenet.*", "vit.*", "ablation_dsu.*", "all_runs.*")
FIGURE_FILES = ("acc_vs_params_*", "acc_vs_flops_*", "curves_*", "ablation_dsu.*")


def classification_report(cls: Any, frame: pd.DataFrame, config_cols: Sequence[str],
                          context: ReportContext) -> ReportPart:
    agg = add_references(aggregate(frame, config_cols, (*TOP1_METRICS, *EMA_METRICS)), context.paper, context.metric)
    tables = build_tables(agg, config_cols, context.metric)
    closing = [t for t in tables if t.name == "all_runs"]
    figures = write_figures(context.records, frame, agg, config_cols, context.paper, context.metric, context.figures,
                            context.save)
    return ReportPart([t for t in tables if t.name != "all_runs"], closing, figures, agg)
