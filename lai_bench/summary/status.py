"""The run-status report: runs per status and grid, failed/diverged/running/missing runs, short seeds, skipped files."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import RunConfig
from ..core.errors import error_line
from .aggregate import STATUS_ORDER
from .display import MISSING, dataset_name, detector_name, md_escape, method_name, model_name, value_text

STATUS_COLUMNS = ["run_id", "name", "grid", "status", "detail", "path"]


def read_expected(path: str | os.PathLike) -> dict[str, str]:
    """Expected run ids from a file: one ``run_id [name]`` per line, ``#`` comments."""
    expected: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            run_id, *name = line.split(maxsplit=1)
            expected[run_id] = name[0] if name else ""
    return expected


def as_expected(expected: Iterable[str] | Mapping[str, str] | None) -> dict[str, str] | None:
    """Normalise the expected runs to ``{run_id: name}``."""
    if expected is None:
        return None
    if isinstance(expected, Mapping):
        return {str(k): str(v or "") for k, v in expected.items()}
    return {str(run_id): "" for run_id in expected}


def status_counts(row: Mapping[str, Any]) -> str:
    """``3 completed, 1 failed`` from an aggregated row's ``n_<status>`` counts."""
    parts = [f"{int(row[f'n_{s}'])} {s}" for s in STATUS_ORDER if int(row[f"n_{s}"])]
    return ", ".join(parts) or "none"


def _detail(row: Any) -> str:
    """Why a run is not completed: its error line, divergence epoch or progress."""
    if row.status == "failed":
        return error_line(row.error) or "(no error text)"
    if row.status == "diverged":
        return f"diverged at epoch {value_text(row.diverged_epoch)}"
    if row.status == "running":
        return f"{int(row.epochs_done)} epoch(s) recorded, started {value_text(row.started_at)}"
    return ""


CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(RunConfig))


def _told_apart(frame: pd.DataFrame) -> list[str]:
    """Run names, with the config values that differ appended where runs of different ids share a name
    (a name says method, options, data set, depth and seed; two runs may differ only in, say, lr)."""
    names = frame["name"].astype(str).tolist()
    skip = {"run_id", "name", "grid", "status", "path", "config_key", "epochs_done"}
    for name in set(names):
        group = frame[(frame["name"].astype(str) == name)]
        if group["run_id"].nunique() < 2:
            continue
        columns = [c for c in group.columns if c not in skip and group[c].astype(str).nunique() > 1
                   and (c.startswith("opt.") or c.split(".")[0] in CONFIG_FIELDS)]
        for index in group.index:
            diff = ", ".join(f"{c}={value_text(group.at[index, c])}" for c in columns)
            names[frame.index.get_loc(index)] = f"{name} [{diff}]" if diff else name
    return names


def status_frame(frame: pd.DataFrame, expected: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per run (and per expected run without a record): status and its detail."""
    rows = [
        {"run_id": r.run_id, "name": name, "grid": r.grid, "status": r.status, "detail": _detail(r), "path": r.path}
        for r, name in zip(frame.itertuples(index=False), _told_apart(frame) if len(frame) else [])
    ]
    present = set(frame["run_id"].astype(str))
    rows += [
        {"run_id": run_id, "name": name, "grid": "", "status": "missing", "detail": "no record", "path": ""}
        for run_id, name in (expected or {}).items()
        if run_id not in present
    ]
    return pd.DataFrame(rows, columns=STATUS_COLUMNS)


def status_markdown(
    frame: pd.DataFrame,
    agg: pd.DataFrame,
    skipped: Sequence[str],
    expected: Mapping[str, str] | None = None,
    sources: Sequence[str] = (),
) -> str:
    """The run-status report: counts, failed/diverged/running/missing runs, short seeds, skipped files."""
    runs = status_frame(frame, expected)
    lines = ["# Run status", ""]
    if sources:
        lines += [f"Results: {', '.join(map(str, sources))}", ""]
    lines += [f"{len(frame)} run record(s) loaded; {len(skipped)} file(s) skipped or set aside.", ""]
    lines += _counts_table(frame, expected)
    lines += _run_sections(runs)
    if expected is not None and not len(runs[runs["status"] == "missing"]):
        lines += ["", f"All {len(expected)} expected runs have a record."]
    lines += _short_seeds(agg)
    if skipped:
        lines += ["", "## Files skipped or set aside", ""] + [f"- {md_escape(m)}" for m in skipped]
    return "\n".join(lines) + "\n"


def _counts_table(frame: pd.DataFrame, expected: Mapping[str, str] | None) -> list[str]:
    """Markdown rows: runs per status for each grid, and in total."""
    header = ["grid", *STATUS_ORDER, "total"]
    lines = ["| " + " | ".join(header) + " |", "| :-- |" + " --: |" * (len(header) - 1)]
    grids = frame["grid"].fillna(MISSING).astype(str)
    for grid in [*sorted(grids.unique()), "all"]:
        part = frame if grid == "all" else frame[grids == grid]
        counts = [int((part["status"] == s).sum()) for s in STATUS_ORDER]
        lines.append(f"| {grid} | " + " | ".join(map(str, counts)) + f" | {len(part)} |")
    if expected is not None:
        present = set(frame["run_id"].astype(str))
        missing = sum(run_id not in present for run_id in expected)
        lines += ["", f"Expected runs: {len(expected)}; with a record: {len(expected) - missing}; missing: {missing}."]
    return lines


def _run_sections(runs: pd.DataFrame) -> list[str]:
    """One Markdown section per non-completed status that has runs: run id, name and detail."""
    sections = [
        ("Failed runs", "failed", "error"),
        ("Diverged runs", "diverged", "epoch"),
        ("Running (incomplete) runs", "running", "progress"),
        ("Missing runs (expected, no record)", "missing", "detail"),
    ]
    lines: list[str] = []
    for title, status, what in sections:
        rows = runs[runs["status"] == status]
        if len(rows):
            lines += ["", f"## {title}", "", f"| run_id | name | {what} |", "| :-- | :-- | :-- |"]
            lines += [
                f"| {r.run_id} | {md_escape(value_text(r.name))} | {md_escape(r.detail)} |" for r in rows.itertuples()
            ]
    return lines


def _short_seeds(agg: pd.DataFrame) -> list[str]:
    """A Markdown section of configurations with fewer completed seeds than their grid has."""
    short = agg[agg["n"] < agg["n_expected"]] if len(agg) else agg
    if not len(short):
        return []
    lines = [
        "",
        "## Configurations with fewer completed seeds than their grid",
        "",
        "| method | model | dataset | grid | n completed / seeds in grid | seeds completed | runs |",
        "| :-- | :-- | :-- | :-- | --: | :-- | :-- |",
    ]
    for _, r in short.iterrows():
        detector = value_text(r.get("detector"))  # detection rows: the method's ResNet inside that detector
        method = method_name(r["method"], r.get("backbone"))
        method += "" if detector == MISSING else f" ({detector_name(detector)})"
        lines.append(
            f"| {method} | {model_name(r['depth'], r.get('backbone'))} | {dataset_name(r['dataset'])} | "
            f"{value_text(r['grid'])} | {int(r['n'])}/{int(r['n_expected'])} | {r['seeds'] or MISSING} | "
            f"{status_counts(r)} |"
        )
    return lines
