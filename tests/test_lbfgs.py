"""L-BFGS and OWL-QN on an in-memory logistic objective: scipy's, Newton's and scikit-learn's
optimum, exact zeros under L1, few passes per iteration, and states that can be resumed."""

import copy
import warnings

import numpy as np
import pytest
import scipy.optimize
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from dlr.solvers import Evaluation, lbfgs, minimize
from dlr.solvers.common import optimality
from dlr.solvers.newton import newton_method

from .conftest import assert_matches


class Logistic:
    """Mean log-loss + l2/2·‖w‖² over θ = [w | b] (the intercept b unpenalized), counting calls."""

    def __init__(self, m=300, n=8, *, l2=1e-2, scale=1.0, seed=0):
        rng = np.random.default_rng(seed)
        self.X = rng.standard_normal((m, n)) * scale
        w = rng.standard_normal(n)
        w[: n // 2] = 0.0
        self.y = (rng.random(m) < expit(self.X @ w / scale + 0.3)).astype(float)
        self.l2 = l2
        self.calls = 0

    @property
    def p(self):
        return self.X.shape[1] + 1

    def __call__(self, theta, hessian=False):
        self.calls += 1
        X, y, m = self.X, self.y, len(self.y)
        w = theta[:-1]
        z = X @ w + theta[-1]
        loss = float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * self.l2 * (w @ w))
        a = expit(z)
        grad = np.append(X.T @ (a - y) / m + self.l2 * w, np.mean(a - y))
        hess = None
        if hessian:
            Xb = np.hstack([X, np.ones((m, 1))])
            hess = Xb.T @ (Xb * (a * (1 - a))[:, None]) / m
            hess[:-1, :-1] += self.l2 * np.eye(len(w))
        return Evaluation(loss, grad, hess)

    def l1(self, strength):
        return np.append(np.full(self.p - 1, strength), 0.0)


def newton_optimum(fun, l1=None):
    state = minimize(newton_method(tol=1e-13, l1=l1), fun, np.zeros(fun.p), max_iter=100)
    assert state.converged
    return state.theta


def run(fun, l1=None, tol=1e-10, max_iter=1000, on_iteration=None, **options):
    solver = lbfgs.limited_memory_bfgs(tol=tol, l1=l1, **options)
    return minimize(solver, fun, np.zeros(fun.p), max_iter=max_iter, on_iteration=on_iteration)


@pytest.mark.parametrize(("scale", "l2"), [(1.0, 1e-2), (1.0, 0.0), (10.0, 1e-4)])
def test_reaches_newtons_and_scipys_optimum(scale, l2):
    fun = Logistic(scale=scale, l2=l2)
    state = run(fun)
    assert state.converged and not state.stalled
    assert optimality(state.theta, state.ev.grad, None) <= 1e-10
    assert_matches(state.theta, newton_optimum(fun), rtol=1e-8)
    reference = scipy.optimize.minimize(
        lambda t: (fun(t).loss, fun(t).grad),
        np.zeros(fun.p),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 0.0, "maxiter": 1000},
    )
    assert_matches(state.theta, reference.x, rtol=1e-8)
    assert state.loss_history[-1] == pytest.approx(reference.fun, rel=1e-14)


def test_a_badly_scaled_quadratic_makes_the_first_line_search_extrapolate():
    rng = np.random.default_rng(1)
    Q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    A = Q @ np.diag(np.geomspace(1e-4, 1e-3, 6)) @ Q.T  # the best first step is ~1e3
    b = rng.standard_normal(6)
    calls = []

    def fun(theta, hessian=False):
        calls.append(1)
        return Evaluation(float(theta @ A @ theta / 2 - b @ theta), A @ theta - b)

    solver = lbfgs.limited_memory_bfgs(tol=1e-12)
    first = solver.step(fun, solver.init(fun, np.zeros(6)))
    assert len(calls) - 1 >= 4  # the unit step, then 4× longer until f rises
    state = minimize(solver, fun, first, max_iter=100)
    assert state.converged
    assert_matches(state.theta, np.linalg.solve(A, b), rtol=1e-8)


def _wiggly(a, beta=0.01, ell=39):
    """Moré & Thuente's (1994) third line-search test function, and its derivative."""
    if a <= 1 - beta:
        base, slope = 1 - a, -1.0
    elif a >= 1 + beta:
        base, slope = a - 1, 1.0
    else:
        base, slope = (a - 1) ** 2 / (2 * beta) + beta / 2, (a - 1) / beta
    k = ell * np.pi / 2
    return base + 2 * (1 - beta) / (ell * np.pi) * np.sin(k * a), slope + (1 - beta) * np.cos(k * a)


MORE_THUENTE = {
    "rational": lambda a: (-a / (a * a + 2), (a * a - 2) / (a * a + 2) ** 2),
    "quintic": lambda a: (
        (a + 0.004) ** 5 - 2 * (a + 0.004) ** 4,
        5 * (a + 0.004) ** 4 - 8 * (a + 0.004) ** 3,
    ),
    "wiggly": _wiggly,
}


@pytest.mark.parametrize("t0", [1e-3, 1e-1, 1e1, 1e3])
@pytest.mark.parametrize("name", MORE_THUENTE)
def test_the_line_search_meets_the_strong_wolfe_conditions(name, t0):
    def fun(theta, hessian=False):
        value, slope = MORE_THUENTE[name](float(theta[0]))
        return Evaluation(value, np.array([slope]))

    f0, slope0 = MORE_THUENTE[name](0.0)
    x, ev, value = lbfgs._wolfe_search(fun, np.zeros(1), np.ones(1), f0, slope0, t0)
    assert value == ev.loss <= f0 + lbfgs.SUFFICIENT_DECREASE * x[0] * slope0
    assert abs(ev.grad[0]) <= -lbfgs.CURVATURE * slope0


@pytest.mark.parametrize(("C", "l1_ratio"), [(0.05, 1.0), (0.3, 1.0), (0.1, 0.5)])
def test_owlqn_matches_scikit_learn_and_its_zeros(C, l1_ratio):
    data = Logistic()
    X, y = data.X, data.y
    m = len(y)
    # scikit-learn minimizes C·Σ loss + (1 − r)/2·‖w‖² + r·‖w‖₁: divided by C·m, ours.
    fun = Logistic(l2=(1 - l1_ratio) / (C * m))
    l1 = fun.l1(l1_ratio / (C * m))
    state = run(fun, l1)
    assert state.converged and not state.stalled
    assert optimality(state.theta, state.ev.grad, l1) <= 1e-10
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ConvergenceWarning would void the comparison
        sk = LogisticRegression(C=C, l1_ratio=l1_ratio, solver="saga", tol=1e-13, max_iter=10**5)
        sk.fit(X, y)
    expected = np.append(sk.coef_.ravel(), sk.intercept_)
    np.testing.assert_allclose(state.theta, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(state.theta == 0, expected == 0)
    if l1_ratio == 1.0:
        assert np.any(state.theta == 0)
    assert_matches(state.theta, newton_optimum(fun, l1), rtol=1e-8)


@pytest.mark.parametrize("penalized", [False, True])
def test_about_one_pass_per_iteration_on_a_well_conditioned_problem(penalized):
    fun = Logistic(m=500, n=20)
    l1 = fun.l1(0.01) if penalized else None
    state = run(fun, l1)
    assert state.converged
    assert state.iteration >= 8
    assert (fun.calls - 1) / state.iteration <= 1.25  # the first call is init's


def test_warm_start_at_the_optimum_is_converged_without_an_iteration():
    fun = Logistic()
    optimum = newton_optimum(fun)
    fun.calls = 0
    state = minimize(lbfgs.limited_memory_bfgs(tol=1e-10), fun, optimum, max_iter=100)
    assert state.converged and state.iteration == 0 and fun.calls == 1
    assert state.loss_history == (state.ev.loss,)


def test_pairs_carried_into_init_make_a_restart_on_more_data_quasi_newton_from_the_start():
    more = Logistic(m=330, seed=3)
    less = copy.copy(more)
    less.X, less.y = more.X[:300], more.y[:300]
    solver = lbfgs.limited_memory_bfgs(tol=1e-10)
    end = minimize(solver, less, np.zeros(more.p), max_iter=100)
    assert end.converged and len(end.s) == 10
    more.calls = 0
    forgetful = minimize(solver, more, end.theta, max_iter=100)  # empty memory
    forgetful_calls, more.calls = more.calls, 0
    init = solver.init(more, end.theta, None, s=end.s, y=end.y)
    assert init.s == end.s and init.y == end.y and init.iteration == 0
    first = solver.step(more, init)  # the unit quasi-Newton step of the carried pairs
    np.testing.assert_array_equal(
        first.theta, end.theta - lbfgs.two_loop(init.ev.grad, end.s, end.y)
    )
    carried = minimize(solver, more, first, max_iter=100)
    assert carried.converged and forgetful.converged
    np.testing.assert_allclose(carried.theta, forgetful.theta, atol=1e-9)
    assert more.calls < forgetful_calls
    # the newest `memory` pairs are kept; a pair without positive curvature is dropped
    short = lbfgs.limited_memory_bfgs(tol=1e-10, memory=4)
    flat_s, flat_y = np.ones(more.p), -np.ones(more.p)
    kept = short.init(more, end.theta, init.ev, s=(*end.s, flat_s), y=(*end.y, flat_y))
    assert kept.s == end.s[-4:] and kept.y == end.y[-4:]
    assert kept.ev is init.ev  # given: no call


@pytest.mark.parametrize("penalized", [False, True])
def test_states_are_immutable_and_resume_bit_identically(penalized):
    fun = Logistic(n=12)
    l1 = fun.l1(0.005) if penalized else None
    solver = lbfgs.limited_memory_bfgs(l1=l1, tol=1e-10, memory=3)
    state = solver.init(fun, np.zeros(fun.p))
    for _ in range(5):
        state = solver.step(fun, state)
    saved = [state.theta.copy(), state.ev.grad.copy(), *(a.copy() for a in state.s + state.y)]
    first = state
    later = [solver.step(fun, state)]
    while not later[-1].converged:
        later.append(solver.step(fun, later[-1]))
        assert len(later[-1].s) == len(later[-1].y) <= 3
    np.testing.assert_array_equal(
        np.concatenate([state.theta, state.ev.grad, *state.s, *state.y]), np.concatenate(saved)
    )
    again = solver.step(fun, first)
    for a, b in zip(again, later[0], strict=True):
        if isinstance(a, tuple):  # ev, loss_history, s, y
            for u, v in zip(a, b, strict=True):
                np.testing.assert_array_equal(u, v)
        else:
            np.testing.assert_array_equal(a, b)
    resumed = minimize(solver, fun, first, max_iter=1000)
    assert resumed.iteration == later[-1].iteration
    np.testing.assert_array_equal(resumed.theta, later[-1].theta)
    assert resumed.loss_history == later[-1].loss_history


def test_the_driver_reports_progress_and_stops_at_max_iter():
    fun = Logistic()
    l1 = fun.l1(0.01)
    seen = []
    state = run(fun, l1, max_iter=4, on_iteration=lambda st, progress: seen.append(progress))
    assert state.iteration == 4 and not state.converged
    assert [p.iteration for p in seen] == [1, 2, 3, 4]
    assert seen[-1].loss == state.loss_history[-1]
    assert seen[-1].grad_norm == optimality(state.theta, state.ev.grad, l1)
    assert len(state.loss_history) == 5
    assert all(b < a for a, b in zip(state.loss_history, state.loss_history[1:], strict=False))
    state = minimize(lbfgs.limited_memory_bfgs(tol=1e-10, l1=l1), fun, state, max_iter=1000)
    assert state.converged and len(state.loss_history) == state.iteration + 1


class Deceptive:
    """f = ‖θ‖², which rises along every direction from 0, with a constant false gradient."""

    p = 3
    calls = 0

    def __call__(self, theta, hessian=False):
        self.calls += 1
        return Evaluation(float(theta @ theta), np.ones(self.p))


@pytest.mark.parametrize("l1", [None, np.array([0.5, 0.5, 0.0])])
def test_no_decrease_stalls_at_the_old_point(l1):
    fun = Deceptive()
    solver = lbfgs.limited_memory_bfgs(l1=l1, tol=1e-10)
    start = solver.init(fun, np.zeros(3))
    state = solver.step(fun, start)
    assert state.stalled and not state.converged
    assert state.iteration == 0 and state.theta is start.theta and state.ev is start.ev
    assert state.loss_history == start.loss_history and state.s == ()
    assert fun.calls - 1 <= lbfgs.MAX_EVALUATIONS
