"""Bootstrap intervals of pspc_net.stats against a resampling loop written out here, and their edge cases."""

import numpy as np
import pytest

from pspc_net.stats import mean_interval, ratio_of_means


def loop_ratio_interval(a, b, resamples, seed):
    """The definition, one resample at a time: same indices for both arrays, ratio of sums, 2.5/97.5 % order
    statistics (lower and higher)."""
    rng = np.random.default_rng(seed)
    n = len(a)
    index = rng.integers(0, n, size=(resamples, n))
    draws = sorted(float(sum(a[i] for i in idx) / sum(b[i] for i in idx)) for idx in index)
    low = draws[int(np.floor(0.025 * (resamples - 1)))]
    high = draws[int(np.ceil(0.975 * (resamples - 1)))]
    return low, high


def test_the_paired_interval_is_the_resampling_loops():
    rng = np.random.default_rng(3)
    b = rng.gamma(2.0, 1.0, size=40)
    a = b * rng.lognormal(0.1, 0.3, size=40)
    point, low, high = ratio_of_means(a, b, resamples=300, seed=5)
    assert point == pytest.approx(a.sum() / b.sum(), rel=1e-15)
    assert (low, high) == pytest.approx(loop_ratio_interval(a, b, 300, 5), rel=1e-12)
    assert low < point < high


def test_a_constant_ratio_has_a_zero_width_paired_interval():
    b = np.random.default_rng(0).gamma(1.0, 1.0, size=64)
    point, low, high = ratio_of_means(1.5 * b, b)
    assert point == pytest.approx(1.5) and low == pytest.approx(1.5) and high == pytest.approx(1.5)
    # Unpaired, the same spread would give a wide interval: the mean's own interval is not zero width.
    m_low, m_high = mean_interval(b)
    assert m_high - m_low > 0.1 * b.mean()


def test_zero_baselines_give_inf_or_one_never_nan():
    zeros = np.zeros(8)
    assert ratio_of_means(zeros, zeros) == (1.0, 1.0, 1.0)
    point, low, high = ratio_of_means(np.ones(8), zeros)
    assert point == np.inf and low == np.inf and high == np.inf


def test_mismatched_or_empty_inputs_are_refused():
    with pytest.raises(ValueError, match="same queries"):
        ratio_of_means(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="at least one"):
        mean_interval(np.array([]))
