"""The engine-API pieces mirrored in Python: the persistent pool and its cap, the logit features."""
import math

import numpy as np
import pytest

import sparsebudget as sb


def test_num_threads_cap_is_a_clear_error():
    q = np.zeros((1, 4, 16), np.float32)
    k = np.zeros((40, 2, 16), np.float32)
    assert sb.MAX_THREADS == 64
    with pytest.raises(ValueError, match=r"num_threads must be in \[1, 64\].*got 65"):
        sb.attention(q, k, k, block_size=16, num_threads=65)
    with pytest.raises(ValueError, match="got 0"):
        sb.attention(q, k, k, block_size=16, num_threads=0)


def test_pool_persists_and_results_do_not_depend_on_threads():
    rng = np.random.default_rng(3)
    q = rng.standard_normal((1, 8, 64)).astype(np.float32)
    k = rng.standard_normal((3000, 2, 64)).astype(np.float32)
    v = rng.standard_normal((3000, 2, 64)).astype(np.float32)
    one = sb.attention(q, k, v, block_size=64, budget=sb.Budget.of_fraction(0.1))
    for n in (2, 3, 2, 2):  # resizing and reusing the shared pool
        np.testing.assert_array_equal(sb.attention(q, k, v, block_size=64, budget=sb.Budget.of_fraction(0.1), num_threads=n), one)


def test_logit_stats_matches_float64():
    rng = np.random.default_rng(5)
    x = (4 * rng.standard_normal(5000)).astype(np.float32)
    p = np.exp(x.astype(np.float64) - x.max())
    p /= p.sum()
    got = sb.logit_stats(x)
    assert got["entropy"] == pytest.approx(float(-(p * np.log(p)).sum()), rel=1e-10)
    assert got["top1_prob"] == pytest.approx(float(p.max()), rel=1e-12)
    assert sb.logit_stats(np.array([1.0, 1.0, -np.inf], np.float32))["entropy"] == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match=r"logits\[1\]"):
        sb.logit_stats(np.array([0.0, np.nan], np.float32))
