"""The whole report for some results folders: tables, run status, figures and the ``report.md`` index.

A file that cannot be written (a full disk, no permission, a folder in its place) does not stop the report: the
others are written and the failure is one line in ``written["failed"]``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ..config.run_config import DETECTORS
from ..core.files import write_text_atomic
from ..summary.aggregate import (
    COCO_RECORD_METRICS,
    EMA_METRICS,
    TOP1_METRICS,
    add_references,
    aggregate,
    build_frame,
    is_detection,
    load_results,
)
from ..summary.comparisons import comparisons_table
from ..summary.figures import save_figure, write_figures
from ..summary.other_tasks import other_task_tables, task_of
from ..summary.paper import load_paper
from ..summary.render import to_latex, to_markdown, write_csv
from ..summary.status import as_expected, status_frame, status_markdown
from ..summary.tables import Table, build_tables
from ..tasks.detection.report import coco_tables, references, write_coco_figures

# What a previous report may have left that this one did not rewrite (only our own file names).
GENERATED = {
    "tables": ("cifar.*", "imagenet.*", "ablation_dsu.*", "all_runs.*", "comparisons.*", "runs.csv",
               *(f"*_{detector}_{kind}.*" for detector in DETECTORS for kind in ("box", "mask"))),
    "figures": ("acc_vs_params_*", "acc_vs_flops_*", "curves_*", "ablation_dsu.*", "ap_vs_flops_*"),
}


def build_report(
    results_dirs: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    paper: str | os.PathLike | None = None,
    metric: str = "best",
    expected: Iterable[str] | Mapping[str, str] | None = None,
) -> dict[str, list]:
    """Write tables, status and figures for the records under ``results_dirs``; return the paths by kind.

    ``failed``: one line per file that could not be written or removed (its path and the reason); the rest is
    written all the same.
    """
    if metric not in ("best", "final"):
        raise ValueError(f"metric must be 'best' or 'final', not {metric!r}")
    if isinstance(results_dirs, (str, os.PathLike)):
        results_dirs = [results_dirs]
    out, expected = Path(out), as_expected(expected)
    records, skipped = load_results(results_dirs)
    frame, config_cols = build_frame(records)
    paper_rows = load_paper(paper)
    # Classification and detection runs are aggregated apart: each task's tables and figures see only its own runs.
    detection = is_detection(frame)
    # its index still points into `records` (the curves read their history)
    classification = frame[task_of(frame) == "classification"]
    agg = add_references(aggregate(classification, config_cols, (*TOP1_METRICS, *EMA_METRICS)), paper_rows, metric)
    coco_agg = aggregate(frame[detection], config_cols, COCO_RECORD_METRICS)
    refs = references(paper_rows)
    written: dict[str, list] = {"tables": [], "figures": [], "status": [], "index": [], "removed": [], "failed": []}
    failed = written["failed"]

    tables = build_tables(agg, config_cols, metric)
    at = next((i for i, table in enumerate(tables) if table.name == "all_runs"), len(tables))
    # after the classification tables, before all_runs: the COCO tables, then those of every other task
    tables[at:at] = coco_tables(coco_agg, config_cols, refs) + other_task_tables(frame, config_cols)
    comparisons = comparisons_table(tables)
    if comparisons is not None:
        tables.append(comparisons)
    for table in tables:
        for path, write in _table_files(table, out / "tables"):
            written["tables"] += _attempt(failed, path, write)
    if len(frame):
        runs = frame.drop(columns=["row_key"])
        written["tables"] += _attempt(failed, out / "tables" / "runs.csv", lambda p: write_csv(runs, p))

    both = pd.concat([a for a in (agg, coco_agg) if len(a)]) if len(agg) or len(coco_agg) else agg
    status = status_markdown(frame, both, skipped, expected, sources=results_dirs)
    written["status"] += _attempt(failed, out / "status.md", lambda p: write_text_atomic(p, status))
    written["status"] += _attempt(failed, out / "status.csv", lambda p: write_csv(status_frame(frame, expected), p))

    def save(fig: Figure, folder: Path, stem: str) -> list[Path]:  # a figure that cannot be written costs only itself
        return _attempt(failed, folder / f"{stem}.png", lambda _: save_figure(fig, folder, stem))

    written["figures"] = write_figures(records, classification, agg, config_cols, paper_rows, metric,
                                       out / "figures", save)
    written["figures"] += write_coco_figures(coco_agg, config_cols, refs, out / "figures", save)
    written["removed"] = _remove_stale(out, [p for kind in ("tables", "figures") for p in written[kind]], failed)
    index = _index_markdown(tables, status, written["figures"], out)
    written["index"] += _attempt(failed, out / "report.md", lambda p: write_text_atomic(p, index))
    return written


def _table_files(table: Table, folder: Path) -> list[tuple[Path, Callable[[Path], Path]]]:
    """A table's files, each with its writer: ``<name>.md``, ``<name>.tex`` and ``<name>.csv``."""
    return [
        (folder / f"{table.name}.md", lambda p: write_text_atomic(p, to_markdown(table))),
        (folder / f"{table.name}.tex", lambda p: write_text_atomic(p, to_latex(table))),
        (folder / f"{table.name}.csv", lambda p: write_csv(table.data, p)),
    ]


def _attempt(failed: list[str], path: Path, write: Callable[[Path], Path | list[Path]]) -> list[Path]:
    """What ``write(path)`` wrote; on an OSError nothing, and one line in ``failed`` naming the file."""
    try:
        done = write(path)
    except OSError as err:
        failed.append(_failure_line(err, path, "writing"))
        return []
    return done if isinstance(done, list) else [done]


def _failure_line(err: OSError, path: Path, doing: str) -> str:
    """``<reason> <doing> <path>``; an error that already names its file (files.atomic_open's) as it is."""
    text = " ".join(str(err).split())
    if err.filename is None and str(path) in text:
        return text
    reason = os.strerror(err.errno).lower() if err.errno else text
    return f"{reason} {doing} {path}"


def _remove_stale(out: Path, written: Sequence[Path], failed: list[str]) -> list[Path]:
    """Delete generated tables/figures of an earlier report that this report did not produce; what cannot be
    deleted is a line in ``failed``."""
    keep = {p.resolve() for p in written}
    stale = [
        path
        for folder, patterns in GENERATED.items()
        for pattern in patterns
        for path in (out / folder).glob(pattern)
        if path.suffix in (".md", ".tex", ".csv", ".png", ".pdf") and not path.is_dir() and path.resolve() not in keep
    ]
    removed = []
    for path in stale:
        try:
            path.unlink()
        except OSError as err:
            failed.append(_failure_line(err, path, "removing"))
        else:
            removed.append(path)
    return removed


def _index_markdown(tables: Sequence[Table], status: str, figures: Sequence[Path], out: Path) -> str:
    """``report.md``: the status, every table and links to the PNG figures."""
    parts = ["# lai_bench report", "", status.replace("# Run status", "## Run status", 1)]
    parts += ["## Tables", ""] + [to_markdown(t) for t in tables]
    pngs = [p for p in figures if p.suffix == ".png"]
    if pngs:
        parts += ["## Figures", ""] + [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in pngs]
    return "\n".join(parts) + "\n"
