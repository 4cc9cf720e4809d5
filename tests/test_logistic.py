"""The stable primitives stay finite and exact at extreme logits."""

import numpy as np
import pytest

from dlr.logistic import log_loss, sigmoid, softplus, softplus_and_sigmoid

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
