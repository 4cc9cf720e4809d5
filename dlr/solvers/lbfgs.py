"""Limited-memory BFGS, and its orthant-wise variant OWL-QN when there is an L1 term.

The direction is −H·v from the two-loop recursion over the last ``memory`` pairs s = θ₊ − θ,
y = ∇f(θ₊) − ∇f(θ), with H₀ = (sᵀy / yᵀy)·I from the newest pair; a pair with sᵀy ≤ ε·‖s‖‖y‖ is
skipped, which keeps H positive definite. Without L1, v = ∇f and a strong Wolfe line search
follows (Nocedal & Wright, algorithms 3.5 and 3.6, cubic interpolation). With L1 it is OWL-QN
(Andrew & Gao 2007): v is the pseudo-gradient (the minimum-norm subgradient of F), a penalized
coordinate at 0 may leave it only against its pseudo-gradient, every trial point is projected onto
the orthant so chosen (a coordinate that would cross 0 stops there), and a backtracking search asks
for sufficient decrease of F. Unlike Andrew & Gao, nonzero coordinates keep their quasi-Newton
component even where its sign disagrees with −v: the direction still descends (only terms with
dᵢvᵢ ≥ 0 are dropped), and on ill-conditioned data it needs fewer iterations (figure in
benchmarks/README.md).

A fresh start has no pairs, and its first step is scaled steepest descent. A warm start may
carry an earlier fit's final pairs into ``init`` (:mod:`dlr.warm` maps them between the fits'
coordinates): near that fit's optimum they make the first steps quasi-Newton steps, which is
what lets a retrain on a little more data converge in a few passes.

Every call of ``fun`` is one pass over the data, line-search trials included. The unit step is
tried first and is usually accepted, and the accepted trial's evaluation is the next iterate's:
about one pass per iteration.
"""

import math
from typing import NamedTuple

import numpy as np

from dlr.linalg import dot
from dlr.solvers.common import Evaluation, Function, Solver, optimality, subgradient, total

SUFFICIENT_DECREASE = 1e-4  # c₁ of the Armijo condition
CURVATURE = 0.9  # c₂ of the strong Wolfe condition
MAX_EVALUATIONS = 20  # per line search
EPS = np.finfo(float).eps


class LbfgsState(NamedTuple):
    """L-BFGS (OWL-QN) after ``iteration`` steps.

    Attributes
    ----------
    iteration : int
        Steps made.
    theta : ndarray of shape (p,)
        The current point.
    ev : Evaluation
        f at ``theta`` (no Hessian).
    loss_history : tuple of float
        F at every iterate, the start included.
    converged : bool
        Whether the optimality measure reached ``tol``.
    stalled : bool
        Whether the line search found no decrease (F flat to rounding: going on would not help).
    s, y : tuple of ndarray of shape (p,)
        The last ≤ ``memory`` correction pairs, oldest first.
    """

    iteration: int
    theta: np.ndarray
    ev: Evaluation
    loss_history: tuple[float, ...]
    converged: bool
    stalled: bool
    s: tuple[np.ndarray, ...]
    y: tuple[np.ndarray, ...]


class _Trial(NamedTuple):
    """A line-search point: step t, the value and slope along the direction, θ + t·d, and its
    evaluation (``x`` and ``ev`` are None at t = 0)."""

    t: float
    value: float
    slope: float
    x: np.ndarray | None = None
    ev: Evaluation | None = None


def limited_memory_bfgs(*, tol: float, l1: np.ndarray | None = None, memory: int = 10) -> Solver:
    """L-BFGS, or OWL-QN with an L1 term, built once from its hyperparameters.

    Parameters
    ----------
    tol : float
        Converged when max |∇F| ≤ ``tol``.
    l1 : ndarray of shape (p,) or None
        L1 weight of each coordinate.
    memory : int
        Correction pairs kept.

    Returns
    -------
    Solver
        ``init(fun, theta0, ev=None, s=(), y=()) -> LbfgsState`` (converged already if
        max |∇F(θ₀)| ≤ ``tol``; ``ev``: the evaluation at θ₀ if already made; ``s``, ``y``:
        correction pairs (p,) carried from an earlier fit, oldest first, which start the
        memory — the newest ``memory`` of those that pass the curvature test) and
        ``step(fun, state) -> LbfgsState``.
    """

    def init(
        fun: Function,
        theta0: np.ndarray,
        ev: Evaluation | None = None,
        s: tuple[np.ndarray, ...] = (),
        y: tuple[np.ndarray, ...] = (),
    ) -> LbfgsState:
        ev = fun(theta0) if ev is None else ev
        done = optimality(theta0, ev.grad, l1) <= tol
        kept = [(si, yi) for si, yi in zip(s, y, strict=True) if _curved(si, yi)]
        kept = kept[-memory:] if memory > 0 else []
        pairs_s, pairs_y = tuple(p[0] for p in kept), tuple(p[1] for p in kept)
        return LbfgsState(0, theta0, ev, (total(ev, theta0, l1),), done, False, pairs_s, pairs_y)

    def step(fun: Function, st: LbfgsState) -> LbfgsState:
        return _step(fun, st, l1, tol, memory)

    return Solver("lbfgs", init, step, l1)


def two_loop(v: np.ndarray, s: tuple, y: tuple) -> np.ndarray:
    """H·v (p,) for the L-BFGS inverse Hessian H of the pairs ``s``, ``y`` (oldest first)."""
    rho = [1.0 / dot(yi, si) for si, yi in zip(s, y, strict=True)]
    alpha = []
    q = v
    for si, yi, r in zip(reversed(s), reversed(y), reversed(rho), strict=True):
        alpha.append(r * dot(si, q))
        q = q - alpha[-1] * yi
    q = q * (dot(s[-1], y[-1]) / dot(y[-1], y[-1]))
    for si, yi, r, a in zip(s, y, rho, reversed(alpha), strict=True):
        q = q + (a - r * dot(yi, q)) * si
    return q


def _step(fun: Function, st: LbfgsState, l1, tol: float, memory: int) -> LbfgsState:
    """One L-BFGS (OWL-QN with ``l1``) iteration; converged when max |∇F| ≤ ``tol``."""
    theta, g = st.theta, st.ev.grad
    v = subgradient(theta, g, l1)
    if st.s:
        d, t = -two_loop(v, st.s, st.y), 1.0
    else:  # no curvature information yet: steepest descent, no coordinate moving more than 1
        d, t = -v, min(1.0, 1.0 / float(np.max(np.abs(v))))
    if l1 is None:
        found = _wolfe_search(fun, theta, d, st.ev.loss, dot(g, d), t)
    else:
        leaves_uphill = (l1 > 0) & (theta == 0) & (d * v >= 0)
        d = np.where(leaves_uphill, 0.0, d)
        found = _orthant_search(fun, theta, d, v, st.loss_history[-1], t, l1)
    if found is None:
        return st._replace(stalled=True)
    x, ev, F = found
    s, y = x - theta, ev.grad - g
    pairs_s, pairs_y = st.s, st.y
    if memory > 0 and _curved(s, y):
        pairs_s, pairs_y = (pairs_s + (s,))[-memory:], (pairs_y + (y,))[-memory:]
    done = optimality(x, ev.grad, l1) <= tol
    return LbfgsState(
        st.iteration + 1, x, ev, st.loss_history + (F,), done, False, pairs_s, pairs_y
    )


def _curved(s: np.ndarray, y: np.ndarray) -> bool:
    """Whether the pair passes the curvature test sᵀy > ε·‖s‖‖y‖ (keeps H positive definite)."""
    return dot(s, y) > EPS * np.sqrt(dot(s, s) * dot(y, y))


def _wolfe_search(fun, theta, d, f0: float, slope0: float, t: float):
    """A step along ``d`` meeting the strong Wolfe conditions, trying ``t`` first.

    ``f0`` and ``slope0`` = ∇f(θ)ᵀd < 0 are f and its slope at θ. Returns (θ + t·d, evaluation,
    f) or None when no decrease was found. Value comparisons allow rounding noise, 8ε·|f0|: near
    the optimum the slopes still say where to go when the values no longer can.
    """
    noise = 8 * EPS * abs(f0)

    def evaluate(t):
        x = theta + t * d
        ev = fun(x)
        return _Trial(t, ev.loss, dot(ev.grad, d), x, ev)

    def acceptable(trial, lo):
        armijo = f0 + SUFFICIENT_DECREASE * trial.t * slope0 + noise
        return trial.value <= armijo and trial.value <= lo.value + noise

    def result(trial):
        return trial.x, trial.ev, trial.value

    lo, hi = _Trial(0.0, f0, slope0), None
    evaluations = 0
    while hi is None and evaluations < MAX_EVALUATIONS:  # algorithm 3.5: bracket a step
        trial = evaluate(t)
        evaluations += 1
        if not acceptable(trial, lo):
            hi = trial
        elif abs(trial.slope) <= -CURVATURE * slope0:
            return result(trial)
        elif trial.slope >= 0:
            lo, hi = trial, lo
        else:
            lo, t = trial, 4.0 * t
    # Algorithm 3.6: zoom in, while the bracket is wider than rounding.
    while hi is not None and evaluations < MAX_EVALUATIONS and abs(hi.t - lo.t) > EPS * lo.t:
        trial = evaluate(_cubic_minimizer(lo, hi))
        evaluations += 1
        if not acceptable(trial, lo):
            hi = trial
            continue
        if abs(trial.slope) <= -CURVATURE * slope0:
            return result(trial)
        if trial.slope * (hi.t - lo.t) >= 0:
            hi = lo
        lo = trial
    # Out of evaluations: settle for a real decrease without the curvature condition.
    return result(lo) if lo.x is not None and lo.value < f0 else None


def _cubic_minimizer(a: _Trial, b: _Trial) -> float:
    """The minimizer of the cubic matching value and slope at ``a`` and ``b`` (N&W eq. 3.59),
    kept a tenth of the interval away from its ends; the midpoint if the cubic has none."""
    d1 = a.slope + b.slope - 3.0 * (a.value - b.value) / (a.t - b.t)
    discriminant = d1 * d1 - a.slope * b.slope
    left, right = min(a.t, b.t), max(a.t, b.t)
    margin = 0.1 * (right - left)
    if discriminant >= 0:
        d2 = math.copysign(math.sqrt(discriminant), b.t - a.t)
        denominator = b.slope - a.slope + 2.0 * d2
        if denominator != 0:
            t = b.t - (b.t - a.t) * (b.slope + d2 - d1) / denominator
            if math.isfinite(t):
                return min(max(t, left + margin), right - margin)
    return 0.5 * (left + right)


def _orthant_search(fun, theta, d, v, F0: float, t: float, l1: np.ndarray):
    """OWL-QN's backtracking along ``d``, trying ``t`` first, with trial points projected onto
    the orthant of θ (the sign of −``v``, the pseudo-gradient, where θ is 0; penalized coordinates
    only). Accepts F ≤ F0 + c₁·vᵀ(x − θ) + rounding noise; steps shrink by safeguarded quadratic
    interpolation. Returns (x, evaluation, F) or None when no decrease was found."""
    orthant = np.where(theta != 0, np.sign(theta), -np.sign(v))
    penalized = l1 > 0
    slope0 = dot(v, d)
    noise = 8 * EPS * abs(F0)
    for _ in range(MAX_EVALUATIONS):
        x = theta + t * d
        x = np.where(penalized & (np.sign(x) != orthant), 0.0, x)
        ev = fun(x)
        F = total(ev, x, l1)
        if F <= F0 + SUFFICIENT_DECREASE * dot(v, x - theta) + noise:
            return x, ev, F
        excess = F - F0 - t * slope0  # > 0: F lies above its tangent at θ
        shrunk = -slope0 * t * t / (2.0 * excess) if excess > 0 else 0.5 * t
        t = min(max(shrunk, 0.1 * t), 0.5 * t)
    return None
