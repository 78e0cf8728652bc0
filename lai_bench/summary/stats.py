"""The statistics of the report, every number from scipy.stats or statsmodels: t intervals of a mean, a method
against its baseline (paired or Welch t-test, probability of improvement, minimum detectable effect), Holm's
correction across one table, and the seeds a planned comparison needs."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
N_TOO_SMALL = "n too small"  # the one phrase for a comparison with fewer than 2 seeds a side
PAIRED, WELCH = "paired", "welch"
NAN = float("nan")


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """The finite values as a float array."""
    array = np.asarray(list(values), dtype=float)
    return array[np.isfinite(array)]


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The t interval of the mean (scipy.stats.t, scale = standard error); NaN with fewer than 2 values."""
    values = _finite(values)
    if len(values) < 2:
        return NAN, NAN
    mean, sem = float(np.mean(values)), float(stats.sem(values))
    if sem == 0.0:  # identical values: the interval is the point (scipy refuses a zero scale)
        return mean, mean
    low, high = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=sem)
    return float(low), float(high)


@dataclass(frozen=True)
class Comparison:
    """A method's values against its baseline's: the gain (difference of means), its CI, the test and its p-value,
    the probability of improvement and the minimum detectable effect; ``test`` is ``N_TOO_SMALL`` when either side
    has fewer than 2 seeds (then only the gain is a number). ``p_holm``/``significant`` are set per table."""

    gain: float
    ci_low: float = NAN
    ci_high: float = NAN
    p_value: float = NAN
    prob_improve: float = NAN
    mde: float = NAN
    test: str = N_TOO_SMALL
    n: int = 0
    n_base: int = 0
    p_holm: float = NAN
    significant: bool = False

    @property
    def tested(self) -> bool:
        return self.test != N_TOO_SMALL


def _by_seed(values: Mapping[Any, float]) -> dict[Any, float]:
    """The finite values, by seed."""
    return {seed: float(v) for seed, v in values.items() if v is not None and math.isfinite(float(v))}


def compare(values: Mapping[Any, float], base: Mapping[Any, float], alpha: float = ALPHA, power: float = POWER,
            confidence: float = CONFIDENCE) -> Comparison:
    """``values`` (seed -> metric) of a method against ``base`` (its baseline's).

    Paired (``scipy.stats.ttest_rel``) when both ran the same seeds: a seed fixes the initialisation, data order and
    augmentation, so differences per seed cancel what the seeds share. Otherwise Welch's t-test
    (``ttest_ind(equal_var=False)``). Probability of improvement: paired, the share of seeds the method wins (ties
    one half); unpaired, U / (n1 n2) of ``mannwhitneyu``. MDE at ``alpha``/``power`` (two-sided, statsmodels'
    ``TTestPower`` / ``TTestIndPower``) times the std of the per-seed differences (paired) or the pooled std.
    """
    ours, theirs = _by_seed(values), _by_seed(base)
    if not ours or not theirs:
        return Comparison(NAN, n=len(ours), n_base=len(theirs))
    a, b = np.array(list(ours.values())), np.array(list(theirs.values()))
    gain = float(np.mean(a) - np.mean(b))
    if len(a) < 2 or len(b) < 2:
        return Comparison(gain, n=len(a), n_base=len(b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero variance: scipy's NaN/inf is the answer
        if set(ours) == set(theirs):
            return _paired(ours, theirs, gain, alpha, power, confidence)
        return _welch(a, b, gain, alpha, power, confidence)


def _paired(ours: dict, theirs: dict, gain: float, alpha: float, power: float, confidence: float) -> Comparison:
    """The paired comparison over the seeds both ran."""
    seeds = sorted(ours)
    a, b = np.array([ours[s] for s in seeds]), np.array([theirs[s] for s in seeds])
    result = stats.ttest_rel(a, b)
    low, high = result.confidence_interval(confidence)
    diff = a - b
    wins = float(np.mean(np.where(diff > 0, 1.0, np.where(diff == 0, 0.5, 0.0))))
    effect = TTestPower().solve_power(effect_size=None, nobs=len(a), alpha=alpha, power=power,
                                      alternative="two-sided")
    mde = float(effect) * float(np.std(diff, ddof=1))
    return Comparison(gain, float(low), float(high), float(result.pvalue), wins, mde, PAIRED, len(a), len(b))


def _welch(a: np.ndarray, b: np.ndarray, gain: float, alpha: float, power: float, confidence: float) -> Comparison:
    """Welch's comparison of two unpaired samples."""
    result = stats.ttest_ind(a, b, equal_var=False)
    low, high = result.confidence_interval(confidence)
    u = stats.mannwhitneyu(a, b, alternative="two-sided").statistic
    effect = TTestIndPower().solve_power(effect_size=None, nobs1=len(a), ratio=len(b) / len(a), alpha=alpha,
                                         power=power, alternative="two-sided")
    mde = float(effect) * pooled_std(a, b)
    return Comparison(gain, float(low), float(high), float(result.pvalue), float(u) / (len(a) * len(b)), mde, WELCH,
                      len(a), len(b))


def pooled_std(a: Sequence[float], b: Sequence[float]) -> float:
    """The pooled std of two samples (statsmodels' pooled-variance standard error of the mean difference, per
    observation)."""
    a, b = _finite(a), _finite(b)
    means = CompareMeans(DescrStatsW(a), DescrStatsW(b))
    return float(means.std_meandiff_pooledvar) / math.sqrt(1 / len(a) + 1 / len(b))


def holm(comparisons: Sequence[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """The comparisons with Holm-corrected p-values (statsmodels ``multipletests``) over those tested; a
    comparison is ``significant`` when its corrected p is below ``alpha``."""
    tested = [i for i, c in enumerate(comparisons) if c.tested and math.isfinite(c.p_value)]
    out = list(comparisons)
    if not tested:
        return out
    reject, corrected, _, _ = multipletests([comparisons[i].p_value for i in tested], alpha=alpha, method="holm")
    for i, rejected, p in zip(tested, reject, corrected):
        out[i] = replace(comparisons[i], p_holm=float(p), significant=bool(rejected))
    return out


# ----------------------------------------------------------------------------- planning


def seeds_per_arm(std: float, delta: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Seeds per method for an unpaired two-sided t-test to detect ``delta`` at ``alpha``/``power`` when the
    seed-to-seed std is ``std`` (statsmodels ``TTestIndPower``, rounded up)."""
    _check_positive(std=std, delta=delta)
    n = TTestIndPower().solve_power(effect_size=delta / std, nobs1=None, ratio=1.0, alpha=alpha, power=power,
                                    alternative="two-sided")
    return int(math.ceil(float(n) - 1e-9))


def detectable_delta(std: float, seeds: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest difference an unpaired two-sided t-test with ``seeds`` per method resolves at ``alpha``/
    ``power``, for a seed-to-seed ``std``."""
    _check_positive(std=std)
    if seeds < 2:
        raise ValueError(f"seeds: a t-test needs at least 2 seeds per method, got {seeds} ({N_TOO_SMALL})")
    effect = TTestIndPower().solve_power(effect_size=None, nobs1=seeds, ratio=1.0, alpha=alpha, power=power,
                                         alternative="two-sided")
    return float(effect) * std


def within_std(values: Sequence[float], groups: Sequence[Any]) -> tuple[float, int]:
    """The seed-to-seed std pooled over configurations: the residual std of ``value ~ C(group)`` (statsmodels OLS),
    and its degrees of freedom; NaN and 0 when no configuration has 2 values."""
    import pandas as pd
    import statsmodels.formula.api as smf

    data = pd.DataFrame({"value": np.asarray(values, dtype=float), "group": [str(g) for g in groups]}).dropna()
    if len(data) - data["group"].nunique() < 1:
        return NAN, 0
    fit = smf.ols("value ~ C(group)", data=data).fit()
    return float(math.sqrt(fit.mse_resid)), int(fit.df_resid)


def _check_positive(**numbers: float) -> None:
    """One error naming the first argument that is not a positive, finite number."""
    for name, value in numbers.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
