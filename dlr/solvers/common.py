"""What every solver shares: the progress record, L1 helpers and the optimality measure."""

from typing import NamedTuple

import numpy as np

from dlr.linalg import dot


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
