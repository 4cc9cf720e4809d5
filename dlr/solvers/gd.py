"""Gradient descent: the seed lecture's fixed step, with optional backtracking or Nesterov momentum.

θ ← θ − α·∇f(θ) (a proximal step, soft-thresholding, when there is an L1 term). Each iteration
is one evaluation of ``fun`` — one pass over the data — except that a rejected backtracking
trial costs one more pass; the evaluation at an accepted trial is the next iteration's gradient,
so nothing is recomputed.
"""

from typing import NamedTuple

import numpy as np

from dlr.linalg import dot
from dlr.solvers.common import soft_threshold, total


class GDState(NamedTuple):
    """After ``iteration`` updates: the evaluated point ``theta`` (p,) and its evaluation ``ev``,
    F at every evaluated point so far, the current step, and Nesterov's sequence (``x_prev``,
    ``t``)."""

    iteration: int
    theta: np.ndarray
    ev: tuple
    loss_history: tuple[float, ...]
    converged: bool
    step: float
    x_prev: np.ndarray
    t: float
    stalled: bool = False


def init(fun, theta0: np.ndarray, *, learning_rate: float, l1=None, **_) -> GDState:
    ev = fun(theta0)
    return GDState(0, theta0, ev, (total(ev, theta0, l1),), False, learning_rate, theta0, 1.0)


def _prox(v, alpha, l1):
    return v if l1 is None else soft_threshold(v, alpha * l1)


def step(fun, st: GDState, *, l1=None, tol: float, line_search=False, nesterov=False, **_):
    """One update; converged when F changed by less than ``tol`` relative to the previous F."""
    alpha, g = st.step, st.ev.grad
    t_next = (1.0 + np.sqrt(1.0 + 4.0 * st.t**2)) / 2.0
    while True:
        x = _prox(st.theta - alpha * g, alpha, l1)
        point = x + ((st.t - 1.0) / t_next) * (x - st.x_prev) if nesterov else x
        ev = fun(point)
        if not line_search:
            break
        d = x - st.theta
        if ev.loss <= st.ev.loss + dot(g, d) + dot(d, d) / (2.0 * alpha) or alpha < 1e-30:
            break
        alpha /= 2.0
    F = total(ev, point, l1)
    previous = st.loss_history[-1]
    converged = abs(F - previous) < tol * abs(previous)
    return GDState(st.iteration + 1, point, ev, st.loss_history + (F,), converged, alpha, x, t_next)
