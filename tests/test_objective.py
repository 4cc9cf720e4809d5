"""Preconditioning changes the solver's coordinates, never the model.

With ``precondition``, the solvers see parameters of scaled features (see dlr.objective); the
objective there must be scikit-learn's objective of the original coefficients, its gradient and
Hessian the chain rule of the unscaled ones, and the scaling must make the curvature at θ = 0
that of a standardized, unpenalized feature.
"""

import numpy as np
import pytest

from dlr.engine import Engine
from dlr.objective import Objective
from dlr.sources import from_arrays
from tests.conftest import assert_matches

SCALES = np.array([1e-3, 1.0, 250.0, 40.0])
MEANS = np.array([0.0, -3.0, 1e3, 7.0])


@pytest.fixture(scope="module", params=[2, 3], ids=["binary", "multinomial"])
def problem(request):
    rng = np.random.default_rng(7)
    m = 300
    X = rng.standard_normal((m, len(SCALES))) * SCALES + MEANS
    y = rng.integers(0, request.param, m)
    s = rng.uniform(0.0, 2.0, m)
    engine = Engine(from_arrays(X, y, s), moments=True)
    return X, y, s, engine, engine.summarize()


@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no-intercept"])
@pytest.mark.parametrize("l1_ratio", [0.0, 0.5], ids=["l2", "elastic-net"])
def test_preconditioned_objective_is_the_original_one_in_other_coordinates(
    problem, fit_intercept, l1_ratio
):
    X, y, s, engine, summary = problem
    options = {"C": 0.3, "l1_ratio": l1_ratio, "fit_intercept": fit_intercept}
    plain = Objective(engine, summary, **options)
    scaled = Objective(engine, summary, precondition=True, **options)
    assert not np.allclose(scaled.scale, 1.0)
    rng = np.random.default_rng(1)
    theta_eff = rng.standard_normal((plain.k, X.shape[1] + 1)) / np.append(SCALES, 1.0)
    if not fit_intercept:
        theta_eff[:, -1] = 0.0
    theta_plain = plain.from_effective(theta_eff)
    theta = scaled.from_effective(theta_eff)
    assert_matches(scaled.effective(theta), theta_eff, 1e-12)

    a, b = plain(theta_plain, hessian=True), scaled(theta, hessian=True)
    assert_matches(b.loss + scaled.l1_term(theta), a.loss + plain.l1_term(theta_plain), 1e-12)
    # θ_eff = J·θ with J = ∂θ_eff/∂θ: gradient Jᵀ·g, Hessian Jᵀ·H·J
    J = np.column_stack([plain.from_effective(scaled.effective(e)) for e in np.eye(len(theta))])
    assert_matches(b.grad, J.T @ a.grad, 1e-10)
    assert_matches(b.hess, J.T @ a.hess @ J, 1e-10)


def test_preconditioned_coordinates_start_with_unit_standardized_curvature(problem):
    """At θ = 0 each coefficient's Hessian diagonal is h = a(1 − a) (binary: 1/4) or p(1 − p)
    (K classes: (K − 1)/K²): the curvature of a standardized, unpenalized feature."""
    *_, engine, summary = problem
    objective = Objective(engine, summary, C=0.05, precondition=True)
    h = 0.25 if objective.k == 1 else (objective.k - 1) / objective.k**2
    diagonal = np.diag(objective(np.zeros(objective.n_params), hessian=True).hess)
    assert_matches(diagonal[objective.is_coef], np.full(objective.is_coef.sum(), h), 1e-12)
