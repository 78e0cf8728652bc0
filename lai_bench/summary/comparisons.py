"""The comparisons table: every gain of every table in full (means ± 95 % CI half-width, the test, raw and
Holm-corrected p, probability of improvement, minimum detectable effect), with the family it was corrected in."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .compare import CONTROL_COSTS, gain_text
from .display import MISSING, dataset_name, finite, fmt_number, model_name
from .stats import N_TOO_SMALL, PAIRED, WELCH
from .tables import Row, Table, _assemble, _cell

TEST_NAMES = {PAIRED: "paired t", WELCH: "Welch t", N_TOO_SMALL: N_TOO_SMALL}
AGAINST = {"": "baseline", **{f"_{kind}": f"control_{kind}" for kind in CONTROL_COSTS}}
NOTES = [
    "One row per comparison shown in the other tables, for their headline metric; Table names the table whose "
    "comparisons of that metric were Holm-corrected together.",
    "Ours, Against: mean ± half-width of the 95 % t interval of the mean over seeds (the mean alone below 2 seeds). "
    "Gain: ours − against, ± the half-width of its 95 % CI; † where p (Holm) < 0.05.",
    "Test: paired t-test (scipy.stats.ttest_rel) where both ran the same seeds, Welch's t-test (ttest_ind, "
    "equal_var=False) otherwise; 'n too small' with fewer than 2 seeds a side (no CI, test or MDE).",
    "P(improve): paired, the share of seeds the method wins (ties count one half); unpaired, U / (n1 n2) of the "
    "Mann-Whitney U test. MDE: the smallest gain this many seeds detect at alpha 0.05 and power 0.8 (two-sided t "
    "test; statsmodels.stats.power), from the std of the per-seed differences (paired) or the pooled std.",
]


def fmt_mean_ci(mean: float, low: float, high: float, digits: int = 2) -> str:
    """``77.63 ± 1.12`` (mean ± 95 % CI half-width); the mean alone without a CI; ``–`` when missing."""
    if not finite(mean):
        return MISSING
    if finite(low) and finite(high):
        return f"{mean:.{digits}f} ± {(high - low) / 2:.{digits}f}"
    return f"{mean:.{digits}f}"


def fmt_p(p: float) -> str:
    """A p-value to three decimals, ``<0.001`` below that; ``–`` when missing."""
    if not finite(p):
        return MISSING
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def _mean_ci(row: pd.Series, head: str) -> str:
    """A row's ``head`` as mean ± CI half-width."""
    return fmt_mean_ci(row[f"{head}_mean"], row.get(f"{head}_ci95_low"), row.get(f"{head}_ci95_high"))


def comparisons_table(tables: Sequence[Table]) -> Table | None:
    """Every comparison of the tables that compare (``Table.head``), or None when no row has one."""
    rows: list[Row] = []
    data = []
    for table in tables:
        if not table.head or table.data.empty:
            continue
        frame = table.data
        by_key = dict(zip(frame.get("config_key", []), frame.index))
        for suffix, against in AGAINST.items():
            gain = f"{table.head}_gain{suffix}"
            if gain not in frame or f"{against}_config_key" not in frame:
                continue
            for index, row in frame.iterrows():
                base = by_key.get(row[f"{against}_config_key"])
                if base is None or not finite(row[gain]):
                    continue
                rows.append(_cells(table, row, frame.loc[base], row[against], gain))
                data.append(_data(table, row, frame.loc[base], row[against], gain))
    if not rows:
        return None
    title = "Comparisons: each method's headline gain against its baseline and matched-cost controls"
    return _assemble("comparisons", title, NOTES, rows, pd.DataFrame(data))


def _cells(table: Table, row: pd.Series, base: pd.Series, against: str, gain: str) -> Row:
    """One comparison's display cells."""
    tested = row.get(f"{gain}_test") not in (None, N_TOO_SMALL) and finite(row.get(f"{gain}_p_value"))
    n_base = int(base["n"]) if finite(base.get("n")) else 0
    return {
        ("", "Table"): _cell(table.name),
        ("", "Method"): _cell(str(row["label"])),
        ("", "Model"): _cell(model_name(row.get("depth"), row.get("backbone"))),
        ("", "Dataset"): _cell(dataset_name(row.get("dataset"))),
        ("", "Against"): _cell(against),
        ("", "n"): _cell(f"{int(row['n'])} vs {n_base}"),
        ("", "Ours"): _cell(_mean_ci(row, table.head)),
        ("", "Against (mean)"): _cell(_mean_ci(base, table.head)),
        ("", "Gain (pp)"): _cell(gain_text(row, gain)),
        ("", "Test"): _cell(TEST_NAMES.get(row.get(f"{gain}_test"), MISSING)),
        ("", "p"): _cell(fmt_p(row.get(f"{gain}_p_value")) if tested else MISSING),
        ("", "p (Holm)"): _cell(fmt_p(row.get(f"{gain}_p_holm")) if tested else MISSING),
        ("", "P(improve)"): _cell(fmt_number(row.get(f"{gain}_prob_improve")) if tested else MISSING),
        ("", "MDE (pp)"): _cell(fmt_number(row.get(f"{gain}_mde")) if tested else MISSING),
    }


def _data(table: Table, row: pd.Series, base: pd.Series, against: str, gain: str) -> dict:
    """One comparison's CSV row, in the stable ``gain_*`` names."""
    head = table.head
    out = {"table": table.name, "metric": head, "label": row["label"], "method": row.get("method"),
           "depth": row.get("depth"), "dataset": row.get("dataset"), "against": against,
           "against_config_key": base.get("config_key"), "n": row["n"], "n_against": base.get("n"),
           "mean": row[f"{head}_mean"], "ci95_low": row.get(f"{head}_ci95_low"),
           "ci95_high": row.get(f"{head}_ci95_high"), "against_mean": base[f"{head}_mean"],
           "against_ci95_low": base.get(f"{head}_ci95_low"), "against_ci95_high": base.get(f"{head}_ci95_high")}
    for end in ("", "_ci95_low", "_ci95_high", "_p_value", "_p_holm", "_prob_improve", "_mde", "_test",
                "_significant"):
        out[f"gain{end}"] = row.get(f"{gain}{end}", np.nan)
    out["config_key"] = row.get("config_key")
    return out
