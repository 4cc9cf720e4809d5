"""Numerically stable logistic primitives, shared by the oracle and the per-chunk kernel.

The textbook forms overflow: ``1 / (1 + exp(-z))`` warns for z < -709 and ``log(sigmoid(z))``
is log(0) = -inf once sigmoid underflows. Both are rewritten through ``t = exp(-|z|)``, which lies
in (0, 1] for every finite z, so nothing overflows and no log(0) is taken:

    sigmoid(z)         = 1 / (1 + t)  if z >= 0,   t / (1 + t)  otherwise
    log(1 + exp(z))    = max(z, 0) + log1p(t)
    loss(z, y)         = log(1 + exp(z)) - y·z      (= -y·log σ(z) - (1 - y)·log(1 - σ(z)))
"""

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) for any finite z, without overflow. Same shape as ``z``."""
    t = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, t) / (1.0 + t)


def softplus(z: np.ndarray) -> np.ndarray:
    """log(1 + exp(z)) for any finite z, without overflow. Same shape as ``z``."""
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def softplus_and_sigmoid(z: np.ndarray, out=None) -> tuple[np.ndarray, np.ndarray]:
    """(log(1 + exp(z)), σ(z)) for the per-chunk kernel's hot loop: ten in-place operations.

    With m = max(z, 0) and t = exp(−|z|): softplus = m + log1p(t), and σ(z) = exp(z − m)/(1 + t),
    exp(z − m) being 1 for z ≥ 0 and exactly t otherwise (the same exp of the same number).
    ``out``: optional (sp, a, t) arrays shaped like z to compute into, allocation-free.
    """
    sp, a, t = out if out is not None else (np.empty_like(z), np.empty_like(z), np.empty_like(z))
    np.abs(z, out=t)
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.maximum(z, 0.0, out=a)
    np.log1p(t, out=sp)
    sp += a
    np.subtract(z, a, out=a)
    np.exp(a, out=a)
    t += 1.0
    a /= t
    return sp, a


def log_loss(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy of labels ``y`` in {0, 1} at logits ``z`` (broadcast shapes)."""
    return softplus(z) - y * z
