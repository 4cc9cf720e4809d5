"""The stable primitives stay finite and exact at extreme logits."""

import math

import numpy as np
import pytest

from dlr.numerics import (
    cross_entropy,
    log_loss,
    log_sum_exp,
    sigmoid,
    sigmoid_curvature,
    softmax,
    softplus,
    softplus_and_sigmoid,
    softplus_sum_and_sigmoid,
)

EXTREMES = np.array(
    [-1e300, -1e9, -1e4, -745.0, -40.0, -1.0, 0.0, 1.0, 40.0, 745.0, 1e4, 1e9, 1e300]
)


def test_sigmoid_is_finite_in_range_and_monotone_at_extreme_logits():
    a = sigmoid(EXTREMES)
    assert np.all(np.isfinite(a))
    assert np.all((a >= 0) & (a <= 1))
    assert np.all(np.diff(a) >= 0)
    assert a[0] == 0.0 and a[-1] == 1.0 and a[6] == 0.5


def test_softplus_has_no_overflow_and_matches_its_asymptotes():
    sp = softplus(EXTREMES)
    assert np.all(np.isfinite(sp))
    assert sp[-1] == 1e300 and sp[0] == 0.0
    np.testing.assert_allclose(softplus(np.array([0.0])), [np.log(2.0)], rtol=1e-15)


@pytest.mark.parametrize("z", [-1e4, -50.0, -3.0, 0.0, 2.5, 50.0, 1e4])
def test_log_loss_equals_cross_entropy_where_the_textbook_form_is_exact(z):
    z = np.array([z])
    for y in (0.0, 1.0):
        loss = log_loss(z, y)[0]
        assert np.isfinite(loss) and loss >= 0
        if abs(z[0]) < 30:
            a = 1 / (1 + np.exp(-z[0]))
            assert loss == pytest.approx(-(y * np.log(a) + (1 - y) * np.log(1 - a)), rel=1e-12)


def test_a_confident_wrong_prediction_costs_its_logit_not_infinity():
    assert log_loss(np.array([1e4]), 0.0)[0] == 1e4
    assert log_loss(np.array([-1e4]), 1.0)[0] == 1e4


def test_fused_kernel_primitive_equals_the_separate_ones():
    z = np.linspace(-800, 800, 10001)
    sp, a = softplus_and_sigmoid(z)
    np.testing.assert_array_equal(sp, softplus(z))
    np.testing.assert_array_equal(a, sigmoid(z))


@pytest.mark.parametrize("m", [1, 511, 512, 513, 8192, 10001])
def test_the_kernels_softplus_sum_is_the_sum_of_the_softplus_to_rounding(m):
    rng = np.random.default_rng(m)
    for z in (rng.normal(scale=3, size=m), np.linspace(-800, 800, m), rng.normal(size=m) * 1e-9):
        total, a = softplus_sum_and_sigmoid(z)
        np.testing.assert_array_equal(a, sigmoid(z))
        exact = math.fsum(softplus(z))
        # a few units of 2^-53 of what is summed: as np.sum of the terms would round
        assert abs(total - exact) <= 8 * 2.0**-53 * (m + math.fsum(np.abs(z)))


def test_sigmoid_curvature_is_a_times_one_minus_a():
    a = sigmoid(EXTREMES)
    out, scratch = np.empty_like(a), np.empty_like(a)
    np.testing.assert_array_equal(sigmoid_curvature(a, out, scratch), a * (1 - a))


def test_softmax_and_log_sum_exp_stay_finite_at_extreme_logits():
    z = np.stack([EXTREMES, -EXTREMES, np.zeros_like(EXTREMES)], axis=1)  # (13, 3)
    p, lse = softmax(z), log_sum_exp(z)
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(lse))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-15)
    np.testing.assert_array_equal(lse[[0, -1]], [1e300, 1e300])  # max(z) dominates
    loss = cross_entropy(z, np.zeros(len(z), dtype=np.intp))
    assert np.all(np.isfinite(loss)) and np.all(loss >= 0)
    assert loss[0] == 2e300 and loss[-1] == 0.0  # wrong by 2e300 / right by far


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
def test_softmax_and_log_sum_exp_equal_the_textbook_forms_where_those_are_exact(scale):
    z = np.random.default_rng(0).standard_normal((50, 4)) * scale
    e = np.exp(z)
    np.testing.assert_allclose(softmax(z), e / e.sum(axis=1, keepdims=True), rtol=1e-13)
    np.testing.assert_allclose(log_sum_exp(z), np.log(e.sum(axis=1)), rtol=1e-13)
    t = np.arange(50) % 4
    textbook = np.log(e.sum(axis=1)) - z[np.arange(50), t]
    np.testing.assert_allclose(cross_entropy(z, t), textbook, rtol=1e-12, atol=1e-12)
