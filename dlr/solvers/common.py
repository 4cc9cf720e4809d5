"""What every solver shares: the evaluation and solver types, the progress record, L1 helpers
and the optimality measure."""

from collections.abc import Callable
from typing import NamedTuple, Protocol

import numpy as np

from dlr.linalg import dot


class Evaluation(NamedTuple):
    """The smooth objective f at one point θ (p,).

    Attributes
    ----------
    loss : float
        f(θ).
    grad : ndarray of shape (p,)
        ∇f(θ).
    hess : ndarray of shape (p, p) or None
        ∇²f(θ), when asked for.
    validation_loss : float or None
        The mean loss on the validation data, when it is attached.
    """

    loss: float
    grad: np.ndarray
    hess: np.ndarray | None = None
    validation_loss: float | None = None


class Function(Protocol):
    """What a solver minimizes: ``fun(theta, hessian=False) -> Evaluation``, one pass over the
    data per call (see :class:`dlr.objective.Objective`)."""

    def __call__(self, theta: np.ndarray, hessian: bool = False) -> Evaluation: ...


class State(Protocol):
    """What every solver state holds (each solver's NamedTuple has more)."""

    iteration: int
    theta: np.ndarray
    ev: Evaluation
    loss_history: tuple[float, ...]
    converged: bool
    stalled: bool


class Solver(NamedTuple):
    """A solver built from its hyperparameters: pure functions over its immutable state.

    Attributes
    ----------
    name : str
        The solver's name in :data:`dlr.solvers.SOLVERS`.
    init : callable ``(fun, theta0, ev=None) -> state``
        The state at θ₀ (p,): one evaluation of ``fun``, or none when ``ev``, the evaluation
        at θ₀, is given (made in the first pass over the data; with the Hessian if
        ``hessian``). L-BFGS's also takes the correction pairs of an earlier fit.
    step : callable ``(fun, state) -> state``
        One iteration; the state passed in is left unchanged.
    l1 : ndarray of shape (p,) or None
        The L1 weight of each coordinate, for the optimality measure.
    hessian : bool
        Whether the solver's evaluations include the Hessian (Newton's).
    """

    name: str
    init: Callable[..., State]
    step: Callable[[Function, State], State]
    l1: np.ndarray | None
    hessian: bool = False

    def optimality(self, state: State) -> float:
        """max |∇F| at the state's point (see :func:`optimality`)."""
        return optimality(state.theta, state.ev.grad, self.l1)


class Progress(NamedTuple):
    """What a solver reports after each iteration (``grad_norm`` is the optimality measure:
    max |∇F|, with the minimum-norm subgradient for L1 terms)."""

    iteration: int
    loss: float
    grad_norm: float
    seconds: float
    validation_loss: float | None = None


def total(ev, theta: np.ndarray, l1: np.ndarray | None) -> float:
    """F = f + Σ l1_i·|θ_i| at a point whose smooth evaluation is ``ev``."""
    return ev.loss + (0.0 if l1 is None else dot(l1, np.abs(theta)))


def soft_threshold(v: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """The proximal operator of t·|·|: sign(v)·max(|v| − t, 0)."""
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)


def subgradient(theta: np.ndarray, grad: np.ndarray, l1: np.ndarray | None) -> np.ndarray:
    """The minimum-norm element of ∂F = ∇f + l1·∂|θ| (just ∇f without L1)."""
    if l1 is None:
        return grad
    at_zero = soft_threshold(grad, l1)
    return np.where(theta != 0, grad + l1 * np.sign(theta), at_zero)


def optimality(theta: np.ndarray, grad: np.ndarray, l1: np.ndarray | None) -> float:
    """max |minimum-norm subgradient|: 0 exactly at the optimum, compared with ``tol``."""
    return float(np.max(np.abs(subgradient(theta, grad, l1)), initial=0.0))
