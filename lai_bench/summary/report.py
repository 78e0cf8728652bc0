"""What a task's report hook (`Task.report`) is given and gives back: the shared context of one report, and the
tables and figures of one task's runs."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from .tables import Table


@dataclass
class ReportContext:
    """What every task's report shares: the records (their histories draw curves), the published numbers, the
    metric of the tables (best or final epoch), the figures' folder and the saver that writes one figure (a figure
    that cannot be written costs only itself)."""

    records: Sequence[dict]
    paper: pd.DataFrame
    metric: str
    figures: Path
    save: Callable[[Figure, Path, str], list[Path]]


@dataclass
class ReportPart:
    """One task's share of the report: its tables (in order), the tables that close the report after every task's
    (e.g. a list of all runs), its figure files, and its per-configuration rows (the status reads them)."""

    tables: list[Table] = field(default_factory=list)
    closing: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    aggregated: pd.DataFrame | None = None
