"""The oracle is the seed lecture's equations; check it against the lecture's own loop form."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

from dlr import oracle
from tests.conftest import assert_matches


def loop_gradients(X, Y, w, b):
    """The lecture's non-vectorized version: a for-loop over the m training examples."""
    n, m = X.shape
    J, dw, db = 0.0, np.zeros((n, 1)), 0.0
    for i in range(m):
        z = float(w[:, 0] @ X[:, i]) + b
        a = 1 / (1 + np.exp(-z))
        J += -(Y[0, i] * np.log(a) + (1 - Y[0, i]) * np.log(1 - a))
        dz = a - Y[0, i]
        dw[:, 0] += X[:, i] * dz
        db += dz
    return J / m, dw / m, db / m


@pytest.fixture
def problem():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((4, 60))
    Y = (rng.random((1, 60)) < 0.4).astype(float)
    return X, Y


def test_vectorized_gradients_equal_the_lectures_loop(problem):
    X, Y = problem
    w, b = np.array([[0.3], [-0.2], [0.1], [0.5]]), -0.25
    J, dw, db = oracle.gradients(X, Y, w, b)
    J_loop, dw_loop, db_loop = loop_gradients(X, Y, w, b)
    assert J == pytest.approx(J_loop, rel=1e-13)
    assert_matches(dw, dw_loop, 1e-13)
    assert db == pytest.approx(db_loop, rel=1e-13)


def test_gradient_is_the_derivative_of_the_cost(problem):
    X, Y = problem
    w, b, h = np.array([[0.3], [-0.2], [0.1], [0.5]]), 0.1, 1e-6
    _, dw, db = oracle.gradients(X, Y, w, b)
    for j in range(4):
        e = np.zeros((4, 1))
        e[j] = h
        numeric = (oracle.gradients(X, Y, w + e, b)[0] - oracle.gradients(X, Y, w - e, b)[0]) / (
            2 * h
        )
        assert dw[j, 0] == pytest.approx(numeric, rel=1e-6)
    numeric_b = (oracle.gradients(X, Y, w, b + h)[0] - oracle.gradients(X, Y, w, b - h)[0]) / (
        2 * h
    )
    assert db == pytest.approx(numeric_b, rel=1e-6)


def test_gradient_descent_starts_at_zero_records_the_loss_at_every_iterate_and_descends(problem):
    X, Y = problem
    fit = oracle.gradient_descent(X, Y, learning_rate=0.5, max_iter=30)
    assert len(fit.losses) == 31
    assert fit.losses[0] == pytest.approx(np.log(2))
    assert all(b <= a for a, b in zip(fit.losses, fit.losses[1:], strict=False))


def test_tol_stops_when_the_relative_loss_change_is_small(problem):
    X, Y = problem
    fit = oracle.gradient_descent(X, Y, learning_rate=0.5, max_iter=10_000, tol=1e-6)
    assert len(fit.losses) < 10_000
    assert abs(fit.losses[-1] - fit.losses[-2]) < 1e-6 * fit.losses[-2]
    assert abs(fit.losses[-2] - fit.losses[-3]) >= 1e-6 * fit.losses[-3]


def test_gradient_descent_reaches_scikit_learns_unpenalized_optimum(problem):
    X, Y = problem
    fit = oracle.gradient_descent(X, Y, learning_rate=2.0, max_iter=20_000, tol=1e-15)
    sk = SkLogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(X.T, Y[0])
    assert_matches(fit.w[:, 0], sk.coef_[0], 1e-5)
    assert fit.b == pytest.approx(sk.intercept_[0], rel=1e-5)
