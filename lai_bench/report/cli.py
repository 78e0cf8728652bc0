"""The command line: ``python -m lai_bench.report RESULTS... [--out DIR] [--paper CSV] [--metric] [--expected]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..core.resources import paper_results_path
from ..summary.status import read_expected
from .build import build_report

DESCRIPTION = "Paper-style tables (Markdown, LaTeX, CSV), a run-status report and figures from run records."
# Looked for when --paper is not given: the working directory's analysis/, then the one shipped with the package.
DEFAULT_PAPER = (Path("analysis/paper_results.csv"), paper_results_path())


def _parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m lai_bench.report", description=DESCRIPTION)
    parser.add_argument("results", nargs="+", help="results folder(s) with run records (searched recursively)")
    parser.add_argument("--out", default="analysis",
                        help="output folder: tables/, figures/, status.md, report.md (default: analysis)")
    parser.add_argument(
        "--paper", default=None, help="published numbers CSV (default: analysis/paper_results.csv if present, "
        "else the one shipped with lai_bench)"
    )
    parser.add_argument(
        "--metric",
        choices=("best", "final"),
        default="best",
        help="headline top-1: best test epoch (what the DLA code reports) or final epoch; the COCO tables always "
        "show the final epoch's AP (what the papers report)",
    )
    parser.add_argument(
        "--expected",
        action="append",
        default=None,
        metavar="FILE",
        help="file of expected runs: one run_id (and optionally its name) per line; repeatable",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Build the report and print where everything was written; exit code 1 when some file could not be written
    (one line each on stderr: the reason and the path), 2 for a missing results folder."""
    args = _parser().parse_args(argv)
    missing = [folder for folder in args.results if not Path(folder).is_dir()]
    if missing:
        print(f"error: no such results folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    paper = args.paper or next((str(p) for p in DEFAULT_PAPER if p.is_file()), None)
    expected = None
    if args.expected:
        expected = {}
        for path in args.expected:
            expected |= read_expected(path)
    written = build_report(args.results, args.out, paper=paper, metric=args.metric, expected=expected)
    print(f"paper numbers: {paper or 'none'}")
    for kind in ("index", "status", "tables", "figures"):
        for path in written[kind]:
            print(f"wrote {path}")
    for path in written["removed"]:
        print(f"removed stale {path}")
    figures_failed = any(str(Path(args.out) / "figures") in line for line in written["failed"])
    if not written["figures"] and not figures_failed:
        print("no figures: no completed runs with metrics")
    for line in written["failed"]:
        print(f"error: {line}", file=sys.stderr)
    if written["failed"]:
        print(f"error: {len(written['failed'])} file(s) not written or removed (listed above); the rest is written",
              file=sys.stderr)
        return 1
    return 0
