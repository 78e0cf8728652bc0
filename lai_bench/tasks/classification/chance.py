"""The chance level of classification on the synthetic data set: what a guess reaches (balanced classes), which
its tables and figures state beside every synthetic result."""
from __future__ import annotations

import pandas as pd

from ...data import dataset_info

SYNTHETIC = "synthetic"


def chance_levels(frame: pd.DataFrame) -> list[float]:
    """Top-1 (%) a guess reaches on the synthetic rows of `frame`: 100 / num_classes (its classes are balanced)."""
    if "dataset" not in frame:
        return []
    rows = frame[frame["dataset"] == SYNTHETIC]
    column = next((c for c in ("num_classes", "synthetic.num_classes") if c in rows), None)
    default = dataset_info(SYNTHETIC).num_classes  # a run that left the option at its default
    classes = rows[column].fillna(default) if column else pd.Series([default] * len(rows), dtype=float)
    return sorted({100.0 / float(c) for c in classes if float(c) > 0})


def chance_text(levels: list[float]) -> str:
    """'chance 10 %' for the chance levels of `chance_levels`; '' when there are none."""
    return ("chance " + " / ".join(f"{level:.3g} %" for level in levels)) if levels else ""
