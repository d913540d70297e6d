"""Interval math against hand-computed values."""

import numpy as np
import pytest

from benchmarks.stats import iqm, mean_ci, paired_difference


def test_mean_is_exact_and_ci_brackets_it():
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    ci = mean_ci(values)
    assert ci.estimate == pytest.approx(4.0)
    assert ci.low < 4.0 < ci.high
    assert ci.low >= 1.0 and ci.high <= 10.0


def test_ci_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=20), rng.normal(size=2000)
    assert (mean_ci(large).high - mean_ci(large).low) < (mean_ci(small).high - mean_ci(small).low) / 4


def test_constant_sample_has_a_point_interval():
    ci = mean_ci([2.5] * 7)
    assert (ci.estimate, ci.low, ci.high) == (2.5, 2.5, 2.5)


def test_one_value_has_no_interval_and_is_never_significant():
    ci = mean_ci([-85.8])
    assert ci.estimate == -85.8 and np.isnan(ci.low) and np.isnan(ci.high) and not ci.excludes_zero()


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)  # (3 + 4 + 5 + 6) / 4
    assert iqm([0, 0, 1, 1, 1, 1, 100, 100]) == pytest.approx(1.0)


def test_paired_difference_of_identical_policies_is_zero():
    values = np.random.default_rng(1).normal(size=50)
    diff = paired_difference(values, values)
    assert (diff.estimate, diff.low, diff.high) == (0.0, 0.0, 0.0)
    assert not diff.excludes_zero()


def test_paired_difference_detects_a_constant_shift_despite_noise():
    base = np.random.default_rng(2).normal(scale=10.0, size=40)
    shifted = base + 1.0 + np.random.default_rng(3).normal(scale=0.1, size=40)
    diff = paired_difference(shifted, base)
    assert diff.excludes_zero() and diff.low > 0.9 and diff.high < 1.1


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [[1.0, 2.0]]])
def test_bad_samples_are_rejected(bad):
    with pytest.raises(ValueError):
        mean_ci(bad)


def test_unpaired_lengths_are_rejected():
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1.0, 2.0], [1.0])


def test_ci_calibration_null_samples_and_rates():
    from benchmarks.bench_ci_calibration import null_sample, run

    rng = np.random.default_rng(0)
    sparse = null_sample("sparse-sign-0.1", 20_000, rng)
    assert set(np.unique(sparse)) == {-1.0, 0.0, 1.0} and abs((sparse != 0).mean() - 0.1) < 0.01
    assert abs(sparse.mean()) < 0.01 and abs(null_sample("exponential", 20_000, rng).mean()) < 0.03
    rows = run(ns=(20,), reps=4)
    assert len(rows) == 6 and all(0.0 <= r[m] <= 1.0 for r in rows for m in ("BCa", "percentile (default)"))


def test_default_ci_keeps_its_level_on_mostly_tied_differences():
    # paired differences where 4% of 100 users differ (two policies that act alike), under the null:
    # BCa calls them significant about 3 times too often; the default (percentile) stays near 5%
    from benchmarks.bench_ci_calibration import null_sample

    rng = np.random.default_rng(0)
    samples = [null_sample("sparse-normal-0.04", 100, rng) for _ in range(300)]
    rate = np.mean([mean_ci(d, seed=r).excludes_zero() for r, d in enumerate(samples)])
    bca = np.mean([mean_ci(d, seed=r, methods=("BCa", "percentile")).excludes_zero() for r, d in enumerate(samples)])
    assert rate <= 0.08 < 0.12 <= bca
