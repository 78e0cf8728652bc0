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

from ..core.files import write_text_atomic
from ..summary.aggregate import build_frame, load_results
from ..summary.canvas import save_figure
from ..summary.comparisons import comparisons_table
from ..summary.paper import load_paper
from ..summary.render import to_latex, to_markdown, write_csv
from ..summary.report import ReportContext, ReportPart
from ..summary.status import as_expected, status_frame, status_markdown
from ..summary.tables import Table
from ..tasks import default_task, list_tasks, task_class

# What a previous report may have left that this one did not rewrite (only our own file names; each task adds its
# own, Task.report_files).
GENERATED = {"tables": ("comparisons.*", "runs.csv"), "figures": ()}


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
    written: dict[str, list] = {"tables": [], "figures": [], "status": [], "index": [], "removed": [], "failed": []}
    failed = written["failed"]

    def save(fig: Figure, folder: Path, stem: str) -> list[Path]:  # a figure that cannot be written costs only itself
        return _attempt(failed, folder / f"{stem}.png", lambda _: save_figure(fig, folder, stem))

    context = ReportContext(records, load_paper(paper), metric, out / "figures", save)
    # Each task's runs are reported apart, by the task's own hook (Task.report): its tables see only its runs.
    parts = [part for _, part in task_reports(frame, config_cols, context)]
    tables = [t for part in parts for t in part.tables] + [t for part in parts for t in part.closing]
    comparisons = comparisons_table(tables)
    if comparisons is not None:
        tables.append(comparisons)
    for table in tables:
        for path, write in _table_files(table, out / "tables"):
            written["tables"] += _attempt(failed, path, write)
    if len(frame):
        runs = frame.drop(columns=["row_key"])
        written["tables"] += _attempt(failed, out / "tables" / "runs.csv", lambda p: write_csv(runs, p))

    aggregated = [p.aggregated for p in parts if p.aggregated is not None and len(p.aggregated)]
    both = pd.concat(aggregated) if aggregated else pd.DataFrame()
    status = status_markdown(frame, both, skipped, expected, sources=results_dirs)
    written["status"] += _attempt(failed, out / "status.md", lambda p: write_text_atomic(p, status))
    written["status"] += _attempt(failed, out / "status.csv", lambda p: write_csv(status_frame(frame, expected), p))

    written["figures"] = [path for part in parts for path in part.figures]
    written["removed"] = _remove_stale(out, [p for kind in ("tables", "figures") for p in written[kind]], failed)
    index = _index_markdown(tables, status, written["figures"], out)
    written["index"] += _attempt(failed, out / "report.md", lambda p: write_text_atomic(p, index))
    return written


def task_of(frame: pd.DataFrame) -> pd.Series:
    """Each run's task; records from before tasks existed are the default task's."""
    if "task" not in frame:
        return pd.Series(default_task(), index=frame.index)
    return frame["task"].fillna(default_task())


def task_reports(frame: pd.DataFrame, config_cols: Sequence[str],
                 context: ReportContext) -> list[tuple[str, ReportPart]]:
    """Every task's share of the report, the default task first, then by name; a task this report cannot import (a
    plug-in's) is skipped: its runs are listed in runs.csv only."""
    tasks = task_of(frame)
    names = sorted(set(tasks), key=lambda name: (name != default_task(), name))
    parts = []
    for name in names:
        try:
            task = task_class(name)
        except ValueError:
            continue
        parts.append((name, task.report(frame[tasks == name], config_cols, context)))
    return parts


def _generated() -> dict[str, tuple[str, ...]]:
    """The file patterns earlier reports wrote: the report's own and every registered task's."""
    patterns = {kind: list(names) for kind, names in GENERATED.items()}
    for name in list_tasks():
        task = task_class(name)
        files = getattr(task, "report_files", None) or {"tables": (f"{name}.*",)}
        for kind, names in files.items():
            patterns[kind] += names
    return {kind: tuple(names) for kind, names in patterns.items()}


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
        for folder, patterns in _generated().items()
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
