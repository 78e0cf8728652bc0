"""The whole report for some results folders: tables, run status, figures and the ``report.md`` index."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..files import write_text_atomic
from .aggregate import add_references, aggregate, build_frame, load_results
from .figures import write_figures
from .paper import load_paper
from .render import to_markdown, write_csv, write_table
from .status import as_expected, status_frame, status_markdown
from .tables import Table, build_tables

# What a previous report may have left that this one did not rewrite (only our own file names).
GENERATED = {
    "tables": ("cifar.*", "imagenet.*", "ablation_dsu.*", "all_runs.*", "runs.csv"),
    "figures": ("acc_vs_params_*", "acc_vs_flops_*", "curves_*", "ablation_dsu.*"),
}


def build_report(
    results_dirs: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    paper: str | os.PathLike | None = None,
    metric: str = "best",
    expected: Iterable[str] | Mapping[str, str] | None = None,
) -> dict[str, list[Path]]:
    """Write tables, status and figures for the records under ``results_dirs``; return the paths by kind."""
    if metric not in ("best", "final"):
        raise ValueError(f"metric must be 'best' or 'final', not {metric!r}")
    if isinstance(results_dirs, (str, os.PathLike)):
        results_dirs = [results_dirs]
    out, expected = Path(out), as_expected(expected)
    records, skipped = load_results(results_dirs)
    frame, config_cols = build_frame(records)
    paper_rows = load_paper(paper)
    agg = add_references(aggregate(frame, config_cols), paper_rows, metric)
    written: dict[str, list[Path]] = {"tables": [], "figures": [], "status": [], "index": [], "removed": []}

    tables = build_tables(agg, config_cols, metric)
    for table in tables:
        written["tables"] += write_table(table, out / "tables")
    if len(frame):
        written["tables"].append(write_csv(frame.drop(columns=["row_key"]), out / "tables" / "runs.csv"))

    status = status_markdown(frame, agg, skipped, expected, sources=results_dirs)
    written["status"] += [
        write_text_atomic(out / "status.md", status),
        write_csv(status_frame(frame, expected), out / "status.csv"),
    ]
    written["figures"] = write_figures(records, frame, agg, config_cols, paper_rows, metric, out / "figures")
    written["removed"] = _remove_stale(out, [p for kind in ("tables", "figures") for p in written[kind]])
    index = _index_markdown(tables, status, written["figures"], out)
    written["index"].append(write_text_atomic(out / "report.md", index))
    return written


def _remove_stale(out: Path, written: Sequence[Path]) -> list[Path]:
    """Delete generated tables/figures of an earlier report that this report did not produce."""
    keep = {p.resolve() for p in written}
    stale = [
        path
        for folder, patterns in GENERATED.items()
        for pattern in patterns
        for path in (out / folder).glob(pattern)
        if path.suffix in (".md", ".tex", ".csv", ".png", ".pdf") and path.resolve() not in keep
    ]
    for path in stale:
        path.unlink()
    return stale


def _index_markdown(tables: Sequence[Table], status: str, figures: Sequence[Path], out: Path) -> str:
    """``report.md``: the status, every table and links to the PNG figures."""
    parts = ["# lai_bench report", "", status.replace("# Run status", "## Run status", 1)]
    parts += ["## Tables", ""] + [to_markdown(t) for t in tables]
    pngs = [p for p in figures if p.suffix == ".png"]
    if pngs:
        parts += ["## Figures", ""] + [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in pngs]
    return "\n".join(parts) + "\n"
