"""Numerically stable primitives of the logistic and softmax models: the one home of σ, softplus,
softmax, log-sum-exp and cross-entropy, shared by the oracle, the per-chunk kernels and scoring.

The textbook forms overflow: ``1 / (1 + exp(-z))`` warns for z < -709, ``log(sigmoid(z))`` is
log(0) = -inf once σ underflows, and ``exp(z) / Σ exp(z)`` is inf / inf for logits above 709.
The sigmoid forms are rewritten through ``t = exp(-|z|)``, which lies in (0, 1] for every finite z,
and the softmax forms through ``z − max(z)``, which is ≤ 0: nothing overflows, no log(0) is taken,
and every value is finite for logits as large as ±1e300.

    sigmoid(z)         = 1 / (1 + t)  if z >= 0,   t / (1 + t)  otherwise
    log(1 + exp(z))    = max(z, 0) + log1p(t)
    loss(z, y)         = log(1 + exp(z)) - y·z      (= -y·log σ(z) - (1 - y)·log(1 - σ(z)))
    log Σ_c exp(z_c)   = max(z) + log Σ_c exp(z_c − max(z))
    softmax(z)_c       = exp(z_c − max(z)) / Σ_d exp(z_d − max(z))
    loss(z, t)         = log Σ_c exp(z_c) − z_t      (multinomial, class index t)
"""

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) for any finite z, without overflow. Same shape as ``z``."""
    t = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, t) / (1.0 + t)


def softplus(z: np.ndarray) -> np.ndarray:
    """log(1 + exp(z)) for any finite z, without overflow. Same shape as ``z``."""
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


#: Samples whose factors 1 + e^(−|z|) ∈ (1, 2] :func:`softplus_sum_and_sigmoid` multiplies
#: together before taking one log: a product of 512 is at most 2^512, far from overflow.
LOG_GROUP = 512


def softplus_and_sigmoid(z: np.ndarray, out=None) -> tuple[np.ndarray, np.ndarray]:
    """(log(1 + exp(z)), σ(z)) for the per-chunk kernel's hot loop: one exp, in place.

    With t = exp(−|z|): softplus = max(z, 0) + log1p(t), and σ(z) = 1/(1 + t) for z ≥ 0 and
    t/(1 + t) otherwise, so the result equals :func:`softplus` and :func:`sigmoid` bit for bit.

    Parameters
    ----------
    z : (m,) float64 logits
    out : optional (softplus, sigmoid, scratch) arrays shaped like ``z`` to compute into,
        allocation-free; the first two are returned.
    """
    sp, a, t = out if out is not None else (np.empty_like(z), np.empty_like(z), np.empty_like(z))
    _exp_minus_abs(z, t)
    np.maximum(z, 0.0, out=a)
    np.log1p(t, out=sp)
    sp += a
    _sigmoid_from(z, t, a)
    return sp, a


def softplus_sum_and_sigmoid(z: np.ndarray, out=None) -> tuple[float, np.ndarray]:
    """(Σ log(1 + exp(z)), σ(z)): :func:`softplus_and_sigmoid` when only the sum of the softplus
    is needed (the kernel's unweighted loss), for about half its time.

    Σ log(1 + e^z) = Σ max(z, 0) + Σ log(1 + t) with t = e^(−|z|), and the second sum is taken
    as Σ_g log Π_{i∈g} (1 + t_i) over groups of :data:`LOG_GROUP` samples: one log per group
    instead of a log1p per sample. Rounding 1 + t_i and the products costs at most a few units
    of 2^−53 per sample, in absolute terms: no more than the kernel's loss Σ softplus(z) − y·z
    already loses to rounding. σ(z) is :func:`sigmoid`'s, bit for bit.

    Parameters
    ----------
    z : (m,) float64 logits
    out : optional (sigmoid, scratch) arrays shaped like ``z`` to compute into; the first is
        returned.
    """
    a, t = out if out is not None else (np.empty_like(z), np.empty_like(z))
    _exp_minus_abs(z, t)
    np.maximum(z, 0.0, out=a)
    total = a.sum()
    _sigmoid_from(z, t, a)  # leaves 1 + t in t
    full = t.size - t.size % LOG_GROUP
    total += np.log(t[:full].reshape(-1, LOG_GROUP).prod(axis=1)).sum()
    total += np.log(t[full:].prod())
    return float(total), a


def _exp_minus_abs(z: np.ndarray, t: np.ndarray) -> None:
    """t = exp(−|z|), in (0, 1] for every finite z."""
    np.abs(z, out=t)
    np.negative(t, out=t)
    np.exp(t, out=t)


def _sigmoid_from(z: np.ndarray, t: np.ndarray, a: np.ndarray) -> None:
    """a = σ(z) from t = exp(−|z|): max([z ≥ 0], t) / (1 + t), which is 1/(1 + t) for z ≥ 0 and
    t/(1 + t) otherwise (t ≤ 1); t becomes 1 + t."""
    np.greater_equal(z, 0.0, out=a, casting="unsafe")
    np.maximum(a, t, out=a)
    t += 1.0
    a /= t


def sigmoid_curvature(a: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """σ'(z) = a(1 − a) from a = σ(z): the weight of each sample in the binary Hessian.

    ``a``, ``out`` and ``scratch`` are (m,) float64 arrays; ``out`` is returned.
    """
    np.subtract(1.0, a, out=scratch)
    return np.multiply(a, scratch, out=out)


def log_loss(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy of labels ``y`` in {0, 1} at logits ``z`` (broadcast shapes)."""
    return softplus(z) - y * z


def softmax_and_log_sum_exp(z: np.ndarray, out=None) -> tuple[np.ndarray, np.ndarray]:
    """(softmax(z), log Σ_c exp(z_c)) of each row of logits ``z`` (m, K), from one exp.

    Both are computed from ``exp(z − max(z))``, whose largest entry per row is exactly 1, so the
    row sums lie in [1, K]: no overflow, and the log is never taken of 0.

    Parameters
    ----------
    z : (m, K) float64 logits
    out : optional (m, K) float64 array for the probabilities (allocation-free)

    Returns
    -------
    P : (m, K) probabilities, rows summing to 1 (``out`` if given)
    lse : (m,) log-sum-exp of each row
    """
    p = np.empty_like(z) if out is None else out
    zmax = z.max(axis=1)
    np.subtract(z, zmax[:, None], out=p)
    np.exp(p, out=p)
    total = p.sum(axis=1)
    p /= total[:, None]
    return p, zmax + np.log(total)


def softmax(z: np.ndarray) -> np.ndarray:
    """Probabilities (m, K) of each row of logits ``z`` (m, K), finite for any finite logits."""
    return softmax_and_log_sum_exp(z)[0]


def log_sum_exp(z: np.ndarray) -> np.ndarray:
    """log Σ_c exp(z_c) (m,) of each row of logits ``z`` (m, K), finite for any finite logits."""
    return softmax_and_log_sum_exp(z)[1]


def cross_entropy(z: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-sample loss (m,) at logits ``z`` for class indices ``targets`` (m,).

    ``z`` is (m,) for a binary model (``targets`` 0/1: :func:`log_loss`) or (m, K) for a
    multinomial one (log Σ_c exp(z_c) − z_t).
    """
    if z.ndim == 1:
        return log_loss(z, targets.astype(np.float64))
    return log_sum_exp(z) - z[np.arange(len(z)), targets]
