"""Paper-style tables (Markdown, LaTeX, CSV), a run-status report and figures from run records.

    python -m lai_bench.report results/cifar/ results/imagenet/ --out analysis/ \\
        [--paper analysis/paper_results.csv] [--metric best|final] [--expected FILE]

Modules, one job each: ``aggregate`` (records into per-run and per-configuration frames), ``paper`` (published
numbers), ``tables`` (the classification paper tables), ``coco`` (the COCO detection tables and AP-vs-GFLOPs figure),
``render`` (Markdown, LaTeX via pandas' Styler, CSV), ``status`` (run status), ``figures`` (matplotlib), ``build``
(the whole report) and ``cli`` (the command line); ``display`` holds the names and number formats they share,
``canvas`` what the figures share. Statistics: ``stats`` (every number from scipy/statsmodels), ``compare`` (a row
against its baseline and matched-cost controls, Holm per table), ``comparisons`` (the comparisons table), ``plan``
(``python -m lai_bench.report.plan``: seeds a gain needs).
Each task's runs go to that task's tables only (`Task.report`): classification's paper tables, detection's COCO
tables, a plug-in task's headline table.
"""

from ..summary.aggregate import add_references, aggregate, build_frame, load_results
from ..summary.paper import load_paper
from ..summary.render import latex_escape, to_latex, to_markdown
from ..summary.status import read_expected, status_frame, status_markdown
from ..summary.tables import Table
from ..tasks.classification.tables import ablation_table, all_runs_table, cifar_table, imagenet_table
from ..tasks.detection.report import coco_table, coco_tables, plot_ap_vs_flops, references
from .build import build_report
from .cli import main

__all__ = [
    "Table",
    "load_paper",
    "load_results",
    "build_frame",
    "aggregate",
    "add_references",
    "cifar_table",
    "imagenet_table",
    "ablation_table",
    "all_runs_table",
    "coco_table",
    "coco_tables",
    "references",
    "plot_ap_vs_flops",
    "to_markdown",
    "to_latex",
    "latex_escape",
    "read_expected",
    "status_frame",
    "status_markdown",
    "build_report",
    "main",
]
