"""Paper-style tables (Markdown, LaTeX, CSV), a run-status report and figures from run records.

    python -m lai_bench.report results/cifar/ results/imagenet/ --out analysis/ \\
        [--paper analysis/paper_results.csv] [--metric best|final] [--expected FILE]

Modules, one job each: ``aggregate`` (records into per-run and per-configuration frames), ``paper`` (published
numbers), ``tables`` (the paper tables), ``render`` (Markdown, LaTeX via pandas' Styler, CSV), ``status`` (run
status), ``figures`` (matplotlib), ``build`` (the whole report) and ``cli`` (the command line); ``display`` holds
the names and number formats they share.
"""

from .aggregate import add_references, aggregate, build_frame, load_results
from .build import build_report
from .cli import main
from .paper import load_paper
from .render import latex_escape, to_latex, to_markdown
from .status import read_expected, status_frame, status_markdown
from .tables import Table, ablation_table, all_runs_table, cifar_table, imagenet_table

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
    "to_markdown",
    "to_latex",
    "latex_escape",
    "read_expected",
    "status_frame",
    "status_markdown",
    "build_report",
    "main",
]
