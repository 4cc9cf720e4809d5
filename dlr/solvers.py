"""Solvers: loops over a function giving the loss and gradient of the whole dataset.

A solver never sees chunks or dask; it calls ``evaluate(w, b) -> Evaluation`` (one pass over the
data each call, see :class:`dlr.engine.Engine`) and keeps its whole state in one immutable value,
so a fit can be inspected, saved and continued from any iteration.
"""

import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from dlr.engine import Evaluation


class GDState(NamedTuple):
    """Gradient-descent state after ``iteration`` updates: ``w`` (n,), ``b``, and the loss J at
    each visited point before its update (``loss_history[k]`` = J(w_k, b_k))."""

    iteration: int
    w: np.ndarray
    b: float
    loss_history: tuple[float, ...]
    converged: bool


class Progress(NamedTuple):
    """What a solver reports after each iteration (``grad_norm`` is ‖dw‖)."""

    iteration: int
    loss: float
    grad_norm: float
    seconds: float


def gd_init(n_features: int) -> GDState:
    """w = 0, b = 0, as in the seed lecture."""
    return GDState(0, np.zeros(n_features), 0.0, (), False)


def gd_step(state: GDState, ev: Evaluation, learning_rate: float, tol: float) -> GDState:
    """w ← w − α·dw, b ← b − α·db, given the evaluation at ``state``'s point.

    Converged when the loss changed by less than ``tol`` relative to the previous one.
    """
    history = state.loss_history + (ev.loss,)
    converged = len(history) > 1 and abs(history[-1] - history[-2]) < tol * abs(history[-2])
    return GDState(
        state.iteration + 1,
        state.w - learning_rate * ev.dw,
        state.b - learning_rate * ev.db,
        history,
        converged,
    )


def gradient_descent(
    evaluate: Callable[[np.ndarray, float], Evaluation],
    state: GDState,
    *,
    learning_rate: float,
    max_iter: int,
    tol: float,
    on_iteration: Callable[[Progress], None] | None = None,
) -> GDState:
    """Run fixed-step gradient descent from ``state`` until converged or ``max_iter`` updates.

    Each iteration is one call of ``evaluate``: one pass over the data.
    """
    while state.iteration < max_iter and not state.converged:
        started = time.perf_counter()
        ev = evaluate(state.w, state.b)
        state = gd_step(state, ev, learning_rate, tol)
        if on_iteration is not None:
            grad_norm = float(np.linalg.norm(ev.dw))
            on_iteration(
                Progress(state.iteration, ev.loss, grad_norm, time.perf_counter() - started)
            )
    return state
