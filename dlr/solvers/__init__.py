"""Solvers: loops over a function giving the smooth objective of the whole dataset.

A solver never sees chunks or dask. It calls ``fun(theta, hessian=False) -> Evaluation`` (one
pass over the data per call; see :class:`dlr.objective.Objective`). Like an optax
transformation, a solver is built once from its hyperparameters (``SOLVERS[name](**options)``,
where an unknown option is a TypeError) into a :class:`Solver` of pure ``init(fun, theta0)`` and
``step(fun, state)`` functions over one immutable NamedTuple state, so a fit can be inspected,
saved and continued from any iteration. Every state has ``iteration``, ``theta`` (the current
point), ``ev`` (its evaluation), ``loss_history`` (F at every iterate, the first at the
starting point), ``converged`` and ``stalled``.
"""

import time
from collections.abc import Callable

import numpy as np

from dlr.solvers import gd, lbfgs, newton
from dlr.solvers.common import Evaluation, Function, Progress, Solver, State

#: name → constructor: ``SOLVERS[name](tol=..., l1=..., **hyperparameters) -> Solver``.
SOLVERS: dict[str, Callable[..., Solver]] = {
    "gd": gd.gradient_descent,
    "lbfgs": lbfgs.limited_memory_bfgs,
    "newton": newton.newton_method,
}

#: Every solver's state and the evaluation inside it: what a checkpoint may hold.
STATES = (gd.GDState, lbfgs.LbfgsState, newton.NewtonState, Evaluation)

#: ``solver="auto"`` uses Newton for up to this many parameters p, whatever the data size: a
#: Hessian pass costs m·p² against m·p for a gradient, nearly free for a handful of parameters.
NEWTON_MAX_PARAMS = 20

#: ... and for more parameters wherever its Hessian work per pass, m·p² multiply-adds (m
#: samples), is at most this — a few tenths of a second of one core — and the p × p solve on
#: the client (p³) is too. There Newton's few passes (quadratic convergence, invariant to the
#: features' scales and correlations) cost little and reach the optimum on badly conditioned
#: real data (scikit-learn's digits: m·p² = 1797·650² = 7.6e8), where L-BFGS may need hundreds
#: of iterations. Beyond it L-BFGS: on 4M × 64 (1.7e10) a Hessian pass took 5× a gradient
#: pass and L-BFGS reached the optimum in half Newton's time (benchmarks/bench_solvers.py).
NEWTON_MAX_WORK = 1e9


def choose(solver: str, n_params: int, n_samples: int) -> str:
    """The solver ``solver="auto"`` stands for (see :data:`NEWTON_MAX_WORK`); others as given."""
    if solver != "auto":
        return solver
    p = n_params
    cheap = n_samples * p**2 <= NEWTON_MAX_WORK and p**3 <= NEWTON_MAX_WORK
    return "newton" if p <= NEWTON_MAX_PARAMS or cheap else "lbfgs"


def minimize(
    solver: Solver,
    fun: Function,
    start: np.ndarray | State,
    *,
    max_iter: int,
    on_iteration: Callable[[State, Progress], bool | None] | None = None,
) -> State:
    """Run ``solver`` from ``start`` (a point θ₀ (p,), or a state to continue) until converged,
    stalled, ``max_iter`` iterations, or ``on_iteration(state, progress)`` returns True."""
    state = solver.init(fun, start) if isinstance(start, np.ndarray) else start
    while state.iteration < max_iter and not (state.converged or state.stalled):
        started = time.perf_counter()
        state = solver.step(fun, state)
        if on_iteration is not None and on_iteration(state, progress(solver, state, started)):
            break
    return state


def progress(solver: Solver, state: State, started: float) -> Progress:
    """The progress record of ``state``, reached by a step that began at ``started``
    (:func:`time.perf_counter`)."""
    return Progress(
        state.iteration,
        state.loss_history[-1],
        solver.optimality(state),
        time.perf_counter() - started,
        state.ev.validation_loss,
    )
