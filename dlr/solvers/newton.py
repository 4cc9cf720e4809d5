"""Newton's method with the exact Hessian, accumulated per chunk in the same pass as the gradient.

The direction solves H·d = −∇f on the client (the Hessian is p × p, for up to a few thousand
parameters); with an L1 term it is the proximal Newton direction, minimizing the quadratic model
plus the L1 term by coordinate descent. A backtracking line search on F follows; every trial point
is evaluated with its Hessian, so an accepted trial is already the next iterate: one pass per
iteration when the full step is taken.
"""

from typing import NamedTuple

import numpy as np

from dlr.linalg import dot, spd_solve
from dlr.solvers.common import Evaluation, Function, Solver, optimality, soft_threshold, total

ARMIJO = 1e-4
MAX_HALVINGS = 40


class NewtonState(NamedTuple):
    """Newton's method after ``iteration`` steps.

    Attributes
    ----------
    iteration : int
        Steps made.
    theta : ndarray of shape (p,)
        The current point.
    ev : Evaluation
        f at ``theta``, with its Hessian.
    loss_history : tuple of float
        F at every iterate, the start included.
    converged : bool
        Whether the optimality measure reached ``tol``.
    stalled : bool
        Whether the line search found no decrease (F flat to rounding: going on would not help).
    """

    iteration: int
    theta: np.ndarray
    ev: Evaluation
    loss_history: tuple[float, ...]
    converged: bool
    stalled: bool = False


def newton_method(*, tol: float, l1: np.ndarray | None = None) -> Solver:
    """Newton's method (proximal Newton with L1), built once from its hyperparameters.

    Parameters
    ----------
    tol : float
        Converged as :func:`converged` says.
    l1 : ndarray of shape (p,) or None
        L1 weight of each coordinate.

    Returns
    -------
    Solver
        ``init(fun, theta0, ev=None) -> NewtonState`` (``ev``: the evaluation at θ₀, with its
        Hessian, if already made) and ``step(fun, state) -> NewtonState``.
    """

    def init(fun: Function, theta0: np.ndarray, ev: Evaluation | None = None) -> NewtonState:
        ev = fun(theta0, hessian=True) if ev is None else ev
        F = total(ev, theta0, l1)
        return NewtonState(0, theta0, ev, (F,), converged(theta0, ev, F, l1, tol))

    def step(fun: Function, st: NewtonState) -> NewtonState:
        return _step(fun, st, l1, tol)

    return Solver("newton", init, step, l1, hessian=True)


def converged(theta, ev, F: float, l1, tol: float) -> bool:
    """max |∇F| ≤ ``tol`` and, without an L1 term, the Newton decrement ½·∇Fᵀ·H⁻¹·∇F — the
    decrease a Newton step predicts, F − F* near the optimum — at most tol²·max(|F|, tol): a
    relative objective gap of about tol² (1e-8 at the default tol), on the flat objectives of
    nearly separable data too, where a small gradient alone is still far from the optimum; and
    an absolute gap of tol³ where F tends to 0 (one class weighing everything: no optimum)."""
    if optimality(theta, ev.grad, l1) > tol:
        return False
    if l1 is not None:
        return True
    decrement = 0.5 * dot(ev.grad, solve(ev.hess, ev.grad))
    return decrement <= tol**2 * max(abs(F), tol)


def solve(H: np.ndarray, b: np.ndarray) -> np.ndarray:
    """H⁻¹·b for a symmetric positive semi-definite H.

    A damping of 1e-12·max(diag H) keeps directions along exact null spaces (such as a common
    shift of all class intercepts, which leaves the loss unchanged) finite and small.
    """
    damping = 1e-12 * max(float(np.max(np.diag(H), initial=0.0)), 1e-300)
    x = spd_solve(H, b, damping)
    return np.linalg.lstsq(H, b, rcond=None)[0] if x is None else x


def prox_newton_direction(theta, g, H, l1, *, sweeps: int = 1000) -> np.ndarray:
    """argmin_d gᵀd + ½·dᵀHd + Σ l1_i·|θ_i + d_i|, by cyclic coordinate descent on u = θ + d."""
    u = theta.copy()
    r = g.copy()  # gradient of the quadratic model at u
    diag = np.diag(H)
    scale = max(float(np.max(np.abs(theta), initial=0.0)), 1.0)
    for _ in range(sweeps):
        largest = 0.0
        for j in range(len(u)):
            if diag[j] <= 0:
                continue
            new = soft_threshold(diag[j] * u[j] - r[j], l1[j]) / diag[j]
            change = new - u[j]
            if change != 0.0:
                r += H[:, j] * change
                u[j] = new
                largest = max(largest, abs(change))
        if largest <= 1e-13 * scale:
            break
    return u - theta


def _step(fun: Function, st: NewtonState, l1: np.ndarray | None, tol: float) -> NewtonState:
    """One damped (proximal) Newton step; converged as :func:`converged` says."""
    g, H, theta = st.ev.grad, st.ev.hess, st.theta
    d = -solve(H, g) if l1 is None else prox_newton_direction(theta, g, H, l1)
    F0 = st.loss_history[-1]
    decrease = dot(g, d)
    if l1 is not None:
        decrease += dot(l1, np.abs(theta + d) - np.abs(theta))
    noise = 8 * np.finfo(float).eps * abs(F0)
    t = 1.0
    for _ in range(MAX_HALVINGS):
        candidate = theta + t * d
        ev = fun(candidate, hessian=True)
        F = total(ev, candidate, l1)
        if F <= F0 + ARMIJO * t * decrease + noise:
            done = converged(candidate, ev, F, l1, tol)
            return NewtonState(st.iteration + 1, candidate, ev, st.loss_history + (F,), done)
        t /= 2.0
    # No decrease along d at any step size: F is flat to rounding here. Stop where we are.
    return st._replace(stalled=True)
