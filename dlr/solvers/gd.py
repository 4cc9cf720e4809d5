"""Gradient descent: the seed lecture's fixed step, with optional backtracking or Nesterov momentum.

θ ← θ − α·∇f(θ) (a proximal step, soft-thresholding, when there is an L1 term). Each iteration
is one evaluation of ``fun`` — one pass over the data — except that a rejected backtracking
trial costs one more pass; the evaluation at an accepted trial is the next iteration's gradient,
so nothing is recomputed.
"""

from typing import NamedTuple

import numpy as np

from dlr.linalg import dot
from dlr.solvers.common import Evaluation, Function, Solver, soft_threshold, total

#: A backtracking trial is accepted when F exceeds the Armijo bound by at most this many
#: rounding errors of F: near the optimum a step's real decrease, ~α‖∇f‖²/2, is below what
#: float64 can resolve in F, and the bare test would halve the step on rounding noise alone
#: (from 0.5 down to ~1e-9, leaving max|∇F| stuck at ~1e-8 where the fixed step goes on to 1e-16).
NOISE = 8 * np.finfo(float).eps


class GDState(NamedTuple):
    """Gradient descent after ``iteration`` updates.

    Attributes
    ----------
    iteration : int
        Updates made.
    theta : ndarray of shape (p,)
        The evaluated point.
    ev : Evaluation
        f at ``theta``.
    loss_history : tuple of float
        F at every evaluated point, the start included.
    converged : bool
        Whether F changed by less than ``tol`` relative to the previous F.
    step : float
        The current step α.
    x_prev : ndarray of shape (p,)
        Nesterov's previous gradient-step point (``theta`` without momentum).
    t : float
        Nesterov's sequence tₖ.
    stalled : bool
        Always False: gradient descent does not stall.
    """

    iteration: int
    theta: np.ndarray
    ev: Evaluation
    loss_history: tuple[float, ...]
    converged: bool
    step: float
    x_prev: np.ndarray
    t: float
    stalled: bool = False


def gradient_descent(
    *,
    learning_rate: float,
    tol: float,
    l1: np.ndarray | None = None,
    line_search: bool = False,
    nesterov: bool = False,
) -> Solver:
    """Gradient descent, built once from its hyperparameters.

    Parameters
    ----------
    learning_rate : float
        The step α (the first step tried, with ``line_search``).
    tol : float
        Converged when F changed by less than ``tol`` relative to the previous F.
    l1 : ndarray of shape (p,) or None
        L1 weight of each coordinate: the step is then proximal (soft-thresholding).
    line_search : bool
        Backtrack: halve α until the step decreases F by Armijo's rule (rounding noise allowed).
    nesterov : bool
        Nesterov's momentum (not with ``line_search``).

    Returns
    -------
    Solver
        ``init(fun, theta0, ev=None) -> GDState`` and ``step(fun, state) -> GDState``.
    """
    if line_search and nesterov:
        raise ValueError("line_search and nesterov cannot be combined; choose one")

    def init(fun: Function, theta0: np.ndarray, ev: Evaluation | None = None) -> GDState:
        ev = fun(theta0) if ev is None else ev
        return GDState(0, theta0, ev, (total(ev, theta0, l1),), False, learning_rate, theta0, 1.0)

    def step(fun: Function, st: GDState) -> GDState:
        alpha, g = st.step, st.ev.grad
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * st.t**2)) / 2.0
        while True:
            x = _prox(st.theta - alpha * g, alpha, l1)
            point = x + ((st.t - 1.0) / t_next) * (x - st.x_prev) if nesterov else x
            ev = fun(point)
            if not line_search:
                break
            d = x - st.theta
            bound = st.ev.loss + dot(g, d) + dot(d, d) / (2.0 * alpha)
            if ev.loss <= bound + NOISE * abs(st.ev.loss) or alpha < 1e-30:
                break
            alpha /= 2.0
        F = total(ev, point, l1)
        previous = st.loss_history[-1]
        converged = abs(F - previous) < tol * abs(previous)
        history = st.loss_history + (F,)
        return GDState(st.iteration + 1, point, ev, history, converged, alpha, x, t_next)

    return Solver("gd", init, step, l1)


def _prox(v, alpha, l1):
    return v if l1 is None else soft_threshold(v, alpha * l1)
