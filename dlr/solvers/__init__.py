"""Solvers: loops over a function giving the smooth objective of the whole dataset.

A solver never sees chunks or dask. It calls ``fun(theta, hessian=False) -> Evaluation`` (one
pass over the data per call; see :class:`dlr.objective.Objective`) and keeps its whole state in
one immutable NamedTuple, returned by pure ``init`` and ``step`` functions, so a fit can be
inspected, saved and continued from any iteration. Every state has ``iteration``, ``theta`` (the
current point), ``ev`` (its evaluation), ``loss_history`` (F at every iterate, the first at the
starting point), ``converged`` and ``stalled``.
"""

import time
from collections.abc import Callable

import numpy as np

from dlr.solvers import gd, lbfgs, newton
from dlr.solvers.common import Progress, optimality

#: name → module with ``init(fun, theta0, **options)`` and ``step(fun, state, **options)``.
SOLVERS = {"gd": gd, "lbfgs": lbfgs, "newton": newton}

#: ``solver="auto"`` uses Newton up to this many parameters, L-BFGS beyond. A Newton pass costs
#: m·p² for the Hessian against m·p for a gradient: on 4M × 64 (65 parameters) a Hessian pass
#: took 5× a gradient pass and L-BFGS reached the optimum in half Newton's time
#: (benchmarks/bench_solvers.py), while for a handful of parameters the Hessian is nearly free.
NEWTON_MAX_PARAMS = 20


def choose(solver: str, n_params: int) -> str:
    if solver == "auto":
        return "newton" if n_params <= NEWTON_MAX_PARAMS else "lbfgs"
    return solver


def minimize(
    solver: str,
    fun,
    start,
    *,
    max_iter: int,
    tol: float,
    l1: np.ndarray | None = None,
    on_iteration: Callable[[object, Progress], bool | None] | None = None,
    **options,
):
    """Run ``solver`` from ``start`` (a point θ₀, or a state to continue) until converged,
    stalled, ``max_iter`` iterations, or ``on_iteration(state, progress)`` returns True."""
    module = SOLVERS[solver]
    options.update(l1=l1, tol=tol)
    state = module.init(fun, start, **options) if isinstance(start, np.ndarray) else start
    while state.iteration < max_iter and not (state.converged or state.stalled):
        started = time.perf_counter()
        state = module.step(fun, state, **options)
        if on_iteration is not None:
            progress = Progress(
                state.iteration,
                state.loss_history[-1],
                optimality(state.theta, state.ev.grad, l1),
                time.perf_counter() - started,
                state.ev.validation_loss,
            )
            if on_iteration(state, progress):
                break
    return state
