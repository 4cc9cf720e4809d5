"""The NumPy reference: the seed lecture's vectorized logistic regression, in its own layout.

Every engine and solver in dlr is tested against these few lines. They hold the whole dataset in
memory, so they are the specification, not a way to train on big data.

Layout (the lecture's): ``X`` is (n, m) with one sample per column, ``Y`` is (1, m), ``w`` is
(n, 1) and ``b`` a scalar. Computation happens in ``X``'s dtype.
"""

from typing import NamedTuple

import numpy as np

from dlr.logistic import log_loss, sigmoid


class OracleFit(NamedTuple):
    """Result of :func:`gradient_descent`: ``w`` (n, 1), ``b`` scalar, the loss at every iterate."""

    w: np.ndarray
    b: float
    losses: list[float]


def forward(X: np.ndarray, w: np.ndarray, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Z = wᵀX + b and A = σ(Z), both (1, m)."""
    Z = w.T @ X + b
    return Z, sigmoid(Z)


def cost(Z: np.ndarray, Y: np.ndarray) -> float:
    """J = mean cross-entropy over the m samples, computed from the logits Z (1, m)."""
    return float(np.mean(log_loss(Z, Y)))


def gradients(X: np.ndarray, Y: np.ndarray, w: np.ndarray, b: float):
    """One forward and backward pass: returns (J, dw (n, 1), db) at (w, b)."""
    m = X.shape[1]
    Z, A = forward(X, w, b)
    dZ = A - Y
    dw = X @ dZ.T / m
    db = np.sum(dZ) / m
    return cost(Z, Y), dw, db


def gradient_descent(
    X: np.ndarray, Y: np.ndarray, learning_rate: float, max_iter: int, tol: float = 0.0
) -> OracleFit:
    """Fixed-step gradient descent from w = 0, b = 0.

    ``losses[k]`` is J after k updates (``losses[0]`` = J(0, 0) = log 2). It stops after the
    update k for which |J_k - J_{k-1}| < tol·|J_{k-1}| (never when tol = 0: ``max_iter`` run).
    """
    w = np.zeros((X.shape[0], 1), dtype=X.dtype)
    b = X.dtype.type(0)
    J, dw, db = gradients(X, Y, w, b)
    losses = [J]
    for _ in range(max_iter):
        w = w - learning_rate * dw
        b = b - learning_rate * db
        J, dw, db = gradients(X, Y, w, b)
        losses.append(J)
        if abs(losses[-1] - losses[-2]) < tol * abs(losses[-2]):
            break
    return OracleFit(w, float(b), losses)
