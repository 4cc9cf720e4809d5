"""The NumPy reference: the seed lecture's vectorized logistic regression, in its own layout.

Every engine and solver in dlr is tested against these few lines. They hold the whole dataset in
memory, so they are the specification, not a way to train on big data.

Layout (the lecture's): ``X`` is (n, m) with one sample per column, ``Y`` is (1, m), ``w`` is
(n, 1) and ``b`` a scalar. Computation happens in ``X``'s dtype.

:func:`binary_reference` and :func:`softmax_reference` specify what the per-chunk kernels
(:mod:`dlr.kernel`) sum over a chunk — loss, gradient and Hessian, with sample weights — in the
kernels' terms: ``X`` (m, n) samples × features, parameters ``theta`` (k, n + 1), one row
``[w_c | b_c]`` per linear function. They are written straight from the equations, without the
kernels' blocking, buffers or shared stable primitives.
"""

from typing import NamedTuple

import numpy as np

from dlr.numerics import log_loss, sigmoid


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


def augmented(X: np.ndarray) -> np.ndarray:
    """[X, 1]: (m, n + 1), the intercept as a feature that is always 1."""
    return np.column_stack([X, np.ones(len(X))])


def binary_reference(X: np.ndarray, y: np.ndarray, s: np.ndarray, theta: np.ndarray):
    """Σ s·loss, Σ s·(a − y)·[x, 1] and Σ s·a(1 − a)·[x, 1][x, 1]ᵀ, straight from the equations.

    Parameters
    ----------
    X : (m, n) features, samples × features
    y : (m,) labels in {0, 1}
    s : (m,) sample weights
    theta : (1, n + 1) parameters [w | b]

    Returns
    -------
    loss : scalar, grad : (1, n + 1), hess : (n + 1, n + 1)
    """
    A = augmented(X)
    z = A @ theta[0]
    a = 1 / (1 + np.exp(-z))
    loss = np.logaddexp(0, z) - y * z
    return s @ loss, ((s * (a - y)) @ A)[None, :], A.T @ (A * (s * a * (1 - a))[:, None])


def softmax_reference(X: np.ndarray, t: np.ndarray, s: np.ndarray, theta: np.ndarray):
    """Σ s·(−log P_t), Σ s·(P − onehot(t)) ⊗ [x, 1] and the Hessian, for K softmax classes.

    Parameters
    ----------
    X : (m, n) features, samples × features
    t : (m,) class indices 0..K−1
    s : (m,) sample weights
    theta : (K, n + 1) parameters, one row [w_c | b_c] per class

    Returns
    -------
    loss : scalar, grad : (K, n + 1), hess : (K(n + 1), K(n + 1)) with θ flattened row by row,
    block (c, d) = Σ s·P_c(δ_cd − P_d)·[x, 1][x, 1]ᵀ
    """
    A = augmented(X)
    Z = A @ theta.T
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    onehot = np.eye(theta.shape[0])[t]
    loss = -np.log(P[np.arange(len(t)), t])
    k, n1 = theta.shape
    H = np.zeros((k * n1, k * n1))
    for c in range(k):
        for d in range(k):
            h = s * P[:, c] * ((c == d) - P[:, d])
            H[c * n1 : (c + 1) * n1, d * n1 : (d + 1) * n1] = A.T @ (A * h[:, None])
    return s @ loss, (s[:, None] * (P - onehot)).T @ A, H
