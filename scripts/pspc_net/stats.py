"""Percentile bootstrap intervals over queries: of a mean, and of the ratio of two methods' means on the same
queries (paired: the spread the two share cancels). The same definitions as the Swift sweeps' Bootstrap
(docs/runs.md): 2000 resamples, seed 0, 95 %, a zero denominator giving inf (1 when both are zero)."""

from __future__ import annotations

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def _resampled_sums(values: list[np.ndarray], resamples: int, seed: int) -> list[np.ndarray]:
    n = len(values[0])
    if n == 0 or any(len(v) != n for v in values):
        raise ValueError("bootstrap needs one value per query, the same queries for every array, at least one")
    index = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    return [np.asarray(v, dtype=np.float64)[index].sum(axis=1) for v in values]


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    out = np.empty_like(a)
    zero = b == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        out[~zero] = a[~zero] / b[~zero]
    out[zero] = np.where(a[zero] == 0, 1.0, np.inf)
    return out


def _interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    # "lower"/"higher" pick order statistics, so an interval of infinite draws stays defined.
    return float(np.quantile(draws, tail, method="lower")), float(np.quantile(draws, 1 - tail, method="higher"))


def mean_interval(x: np.ndarray, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> tuple[float, float]:
    """The `level` percentile bootstrap interval of mean(x)."""
    (sums,) = _resampled_sums([x], resamples, seed)
    return _interval(sums / len(x), level)


def ratio_of_means(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                   level: float = LEVEL) -> tuple[float, float, float]:
    """mean(a) / mean(b) over the same queries and its paired percentile bootstrap interval."""
    sa, sb = _resampled_sums([a, b], resamples, seed)
    point = float(_ratio(np.sum(a), np.sum(b)))
    low, high = _interval(_ratio(sa, sb), level)
    return point, low, high
