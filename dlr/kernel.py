"""Per-chunk kernels: one visit to a chunk yields every partial sum a pass needs.

Pure NumPy math: no dask, no I/O, no error reporting of its own (a chunk's values are checked
through the :class:`dlr.chunks.ChunkContext` handed in). A chunk is walked in blocks of samples
small enough to stay in the CPU cache; each block is copied once into a float64 buffer (exact
for float32 and integer data) and everything is computed while the block is hot, so the chunk
is read from memory once, float32 chunks stay float32 in memory, and all arithmetic and
accumulation is float64.

Parameters come as ``theta`` of shape (k, n + 1), one row ``[w_c | b_c]`` per linear function:

- k = 1: binary logistic regression, σ(wᵀx + b), labels ``y`` in {0, 1};
- k = K ≥ 3: multinomial, softmax over K logits, ``y`` holding class indices 0..K-1.

Samples may carry weights ``s`` (None means all ones). For a chunk, :func:`chunk_partials` gives

    loss = Σ s_i ℓ(z_i, y_i)
    grad = Σ s_i (p_i − onehot(y_i)) ⊗ [x_i, 1]                  shape (k, n + 1)
    hess = Σ s_i ∂²ℓ/∂θ² (optional)                              shape (k(n+1), k(n+1))

with θ flattened row by row. Binary: ℓ = log(1 + eᶻ) − y·z and ∂²ℓ = a(1 − a)·[x, 1][x, 1]ᵀ.
In the seed lecture's terms, over a block of samples X (n, rows): Z = wᵀX + b, A = σ(Z),
dZ = A − Y, and the gradient sums are X·dZᵀ and ΣdZ — :func:`_binary_block` computes exactly
these lines, in this order. :func:`dlr.oracle.binary_reference` and
:func:`dlr.oracle.softmax_reference` state the sums without any of the blocking.
"""

from typing import NamedTuple

import numpy as np

from dlr.chunks import ChunkContext
from dlr.errors import DataError
from dlr.linalg import aligned, dot, matmul, single_threaded_blas
from dlr.memory import per_thread, per_thread_array
from dlr.numerics import (
    sigmoid_curvature,
    softmax_and_log_sum_exp,
    softplus_and_sigmoid,
    softplus_sum_and_sigmoid,
)

BLOCK_BYTES = 4 << 20
MIN_BLOCK_SAMPLES = 64

#: More distinct labels than this in a classification target is an error, not a model.
MAX_CLASSES = 1000

#: Chunks with at most this many distinct labels carry per-label feature sums in their summary.
MAX_LABEL_SUMS = 16


def block_samples(n_features: int) -> int:
    """Samples per cache-sized block. Depends on n only, so the summation order is fixed."""
    return max(MIN_BLOCK_SAMPLES, BLOCK_BYTES // (8 * n_features))


def _blocks(x: np.ndarray, n: int, samples_first: bool):
    """Yield (start, stop, xb) over cache-sized sample blocks of a chunk, ``xb`` a float64 copy
    (rows, n) of the block's samples (a transposed view for features-first chunks), in an
    aligned buffer reused from block to block (see :mod:`dlr.linalg` for why aligned)."""
    m_c = x.shape[0] if samples_first else x.shape[1]
    rows = min(block_samples(n), m_c)
    shape = (rows, n) if samples_first else (n, rows)
    buf = per_thread_array("kernel block", shape)
    for s in range(0, m_c, rows):
        e = min(s + rows, m_c)
        if samples_first:
            xb = buf[: e - s]
            np.copyto(xb, x[s:e])
            yield s, e, xb
        else:
            xb = buf[:, : e - s]
            np.copyto(xb, x[:, s:e])
            yield s, e, xb.T


def _workspace(rows: int, theta: np.ndarray, hessian: bool) -> "_Workspace":
    """This thread's workspace for blocks of ``rows`` samples and parameters shaped like
    ``theta`` (kept from chunk to chunk, see :func:`dlr.memory.per_thread`), loaded with
    ``theta``."""
    key = (theta.shape, hessian)
    workspace = per_thread(
        "kernel workspace", key, lambda: _Workspace(rows, *key), lambda ws: ws.rows >= rows
    )
    return workspace.load(theta)


class BinaryBlock(NamedTuple):
    """A block's views of the workspace for the binary model: each (rows,) unless noted.

    Attributes
    ----------
    Z_column : (rows, 1)
        Z as the matrix product writes it; ``Z`` is the same memory.
    Z : (rows,)
        The logits Z = wᵀX + b.
    Y : (rows,)
        The labels, as float64.
    softplus : (rows,)
        log(1 + e^Z), then the weighted per-sample loss (weighted samples only).
    A : (rows,)
        A = σ(Z), overwritten in place by dZ = A − Y (then weighted).
    scratch : (rows,)
        Scratch of :func:`dlr.numerics.softplus_and_sigmoid` and the curvature.
    curvature : (rows,)
        a(1 − a) (then weighted), the samples' weights in the Hessian.
    YZ : (rows,)
        Y·Z, for the weighted loss.
    """

    Z_column: np.ndarray
    Z: np.ndarray
    Y: np.ndarray
    softplus: np.ndarray
    A: np.ndarray
    scratch: np.ndarray
    curvature: np.ndarray
    YZ: np.ndarray


class _Workspace:
    """Aligned scratch buffers for the blocks of a chunk, and the parameters copied out of
    ``theta`` (see :meth:`load`).

    Attributes
    ----------
    wT : (n, k)
        Wᵀ, as BLAS multiplies it.
    b : (k,)
        The intercepts.
    Z, P : (rows, k)
        Logits, and softmax probabilities then residuals P − onehot(Y) (multinomial).
    Y, YZ, softplus, A, scratch, curvature : (rows,)
        The binary model's vectors (see :class:`BinaryBlock`); ``curvature`` also holds the
        multinomial Hessian's per-sample weights.
    X_dZ : (k, n)
        X·dZᵀ of one block, before it is added to the gradient.
    hx, hxx, hxb : (rows, n), (n, n), (n,)
        Hessian products (only when the Hessian is asked for).
    """

    def __init__(self, rows: int, shape: tuple[int, int], hessian: bool):
        k, n1 = shape
        n = n1 - 1
        self.rows = rows
        self.wT = aligned((n, k))
        self.b = np.empty(k)
        self.Z = aligned((rows, k))
        self.P = aligned((rows, k))
        self.Y, self.YZ = aligned((rows,)), aligned((rows,))
        self.softplus, self.A, self.scratch = aligned((rows,)), aligned((rows,)), aligned((rows,))
        self.curvature = aligned((rows,))
        self.X_dZ = aligned((k, n))
        self.hx = aligned((rows, n)) if hessian else None
        self.hxx = aligned((n, n)) if hessian else None
        self.hxb = aligned((n,)) if hessian else None
        self._views: dict[int, BinaryBlock] = {}

    def load(self, theta: np.ndarray) -> "_Workspace":
        n = theta.shape[1] - 1
        self.wT[:] = theta[:, :n].T
        self.b[:] = theta[:, n]
        return self

    def binary_views(self, rows: int) -> BinaryBlock:
        """The views for a block of ``rows`` samples: made once per block length, as a chunk's
        blocks all have one length but the last."""
        views = self._views.get(rows)
        if views is None:
            views = self._views[rows] = BinaryBlock(
                Z_column=self.Z[:rows],
                Z=self.Z[:rows, 0],
                Y=self.Y[:rows],
                softplus=self.softplus[:rows],
                A=self.A[:rows],
                scratch=self.scratch[:rows],
                curvature=self.curvature[:rows],
                YZ=self.YZ[:rows],
            )
        return views


def chunk_partials(
    x: np.ndarray,
    y: np.ndarray,
    s: np.ndarray | None,
    theta: np.ndarray,
    *,
    samples_first: bool,
    hessian: bool = False,
) -> dict[str, np.ndarray]:
    """Loss, gradient (and Hessian) sums of one chunk at ``theta``, in one visit.

    Parameters
    ----------
    x : (m_c, n) if ``samples_first`` else (n, m_c), any real dtype
    y : (m_c,) labels in {0, 1} (k = 1) or class indices (k ≥ 3)
    s : (m_c,) float64 sample weights, or None for unit weights
    theta : (k, n + 1) float64, rows [w | b]

    Returns
    -------
    ``{"loss": () , "grad": (k, n + 1), "hess": (k(n+1), k(n+1))}`` float64 sums, ``hess``
    only when asked for.
    """
    k, n1 = theta.shape
    n = n1 - 1
    out = {"loss": np.zeros(()), "grad": np.zeros((k, n1))}
    if hessian:
        out["hess"] = np.zeros((k * n1, k * n1))
    m_c = x.shape[0] if samples_first else x.shape[1]
    ws = _workspace(min(block_samples(n), m_c), theta, hessian)
    block = _binary_block if k == 1 else _multinomial_block
    with single_threaded_blas():
        for b0, b1, xb in _blocks(x, n, samples_first):
            sb = None if s is None else s[b0:b1]
            block(xb, y[b0:b1], sb, ws, out)
    if hessian:
        _symmetrize(out["hess"], k, n1)
    return out


def _binary_block(xb, yb, sb, ws: _Workspace, out):
    """Accumulate one block of the binary model into ``out`` (see :func:`chunk_partials`).

    ``xb`` (rows, n) float64 samples, ``yb`` (rows,) labels, ``sb`` (rows,) weights or None.
    """
    rows, n = xb.shape
    v = ws.binary_views(rows)
    np.matmul(xb, ws.wT, out=v.Z_column)  # Z = wᵀX ...
    np.add(v.Z, ws.b[0], out=v.Z)  # ... + b
    np.copyto(v.Y, yb, casting="unsafe")
    if sb is None:
        softplus, A = softplus_sum_and_sigmoid(v.Z, (v.A, v.scratch))  # A = σ(Z)
    else:
        softplus, A = softplus_and_sigmoid(v.Z, (v.softplus, v.A, v.scratch))
    hessian = "hess" in out
    if hessian:  # a(1 − a) needs A, which dZ overwrites next
        sigmoid_curvature(A, out=v.curvature, scratch=v.scratch)
    dZ = np.subtract(A, v.Y, out=A)  # dZ = A − Y
    if sb is None:
        out["loss"] += softplus - np.dot(v.Y, v.Z)  # Σ log(1 + e^Z) − Y·Z
    else:
        np.multiply(v.Y, v.Z, out=v.YZ)
        softplus -= v.YZ  # ℓ = log(1 + e^Z) − Y·Z
        softplus *= sb
        out["loss"] += softplus.sum()  # Σ s·ℓ
        dZ *= sb  # s·dZ
    np.matmul(dZ, xb, out=ws.X_dZ[0])  # X·dZᵀ
    out["grad"][0, :n] += ws.X_dZ[0]
    out["grad"][0, n] += dZ.sum()  # ΣdZ
    if hessian:
        if sb is not None:
            np.multiply(v.curvature, sb, out=v.curvature)
        _add_hessian_block(out["hess"], 0, 0, xb, v.curvature, ws)  # [X, 1]ᵀ·a(1 − a)·[X, 1]


def _multinomial_block(xb, yb, sb, ws: _Workspace, out):
    """Accumulate one block of the K-class softmax model into ``out``.

    ``xb`` (rows, n) float64 samples, ``yb`` (rows,) class indices, ``sb`` (rows,) or None.
    """
    rows, n = xb.shape
    k = ws.b.shape[0]
    index = np.arange(rows)
    yb = np.asarray(yb, dtype=np.intp)
    Z = ws.Z[:rows]
    np.matmul(xb, ws.wT, out=Z)  # Z = WᵀX ...
    Z += ws.b  # ... + b
    P, lse = softmax_and_log_sum_exp(Z, out=ws.P[:rows])  # P = softmax(Z)
    loss = lse - Z[index, yb]  # ℓ = log Σ_c e^Z_c − Z_y
    probabilities = P.copy() if "hess" in out else None
    dZ = P
    dZ[index, yb] -= 1.0  # dZ = P − onehot(Y), in P's buffer
    if sb is None:
        out["loss"] += loss.sum()
    else:
        loss *= sb
        out["loss"] += loss.sum()
        dZ *= sb[:, None]
    np.matmul(dZ.T, xb, out=ws.X_dZ)  # X·dZᵀ
    out["grad"][:, :n] += ws.X_dZ
    out["grad"][:, n] += dZ.sum(axis=0)  # ΣdZ
    if probabilities is not None:
        h = ws.curvature[:rows]
        for c in range(k):
            for d in range(c, k):
                # the samples' weights in block (c, d): P_c(δ_cd − P_d)
                np.multiply(probabilities[:, c], (c == d) - probabilities[:, d], out=h)
                if sb is not None:
                    h *= sb
                _add_hessian_block(out["hess"], c, d, xb, h, ws)


def _add_hessian_block(hess, c, d, xb, h, ws: _Workspace):
    """hess[c, d] block += [xb, 1]ᵀ·diag(h)·[xb, 1] (upper triangle of blocks only).

    ``xb`` (rows, n), ``h`` (rows,) per-sample curvature, ``hess`` (k(n+1), k(n+1)).
    """
    rows, n = xb.shape
    n1 = n + 1
    rc, rd = c * n1, d * n1
    hx = ws.hx[:rows]
    np.multiply(xb, h[:, None], out=hx)
    np.matmul(xb.T, hx, out=ws.hxx)
    hess[rc : rc + n, rd : rd + n] += ws.hxx
    np.matmul(h, xb, out=ws.hxb)
    hess[rc : rc + n, rd + n] += ws.hxb
    hess[rc + n, rd : rd + n] += ws.hxb
    hess[rc + n, rd + n] += h.sum()


def _symmetrize(hess, k, n1):
    """Copy the upper blocks (c < d) to the lower ones."""
    for c in range(k):
        for d in range(c + 1, k):
            hess[d * n1 : (d + 1) * n1, c * n1 : (c + 1) * n1] = hess[
                c * n1 : (c + 1) * n1, d * n1 : (d + 1) * n1
            ].T


def chunk_logits(x: np.ndarray, theta: np.ndarray, *, samples_first: bool, check=None):
    """Logits of a chunk's samples: (m_c,) for k = 1, else (m_c, k); float64.

    Features are validated first when ``check`` (a :class:`dlr.chunks.ChunkContext`) is given.
    """
    k, n1 = theta.shape
    m_c = x.shape[0] if samples_first else x.shape[1]
    rows = min(block_samples(n1 - 1), m_c)
    ws = _workspace(rows, theta, False)
    z = np.empty((m_c, k))
    with single_threaded_blas():
        for b0, b1, xb in _blocks(x, n1 - 1, samples_first):
            if check is not None:
                check.features(xb, b0)
            np.matmul(xb, ws.wT, out=ws.Z[: b1 - b0])
            np.add(ws.Z[: b1 - b0], ws.b, out=z[b0:b1])
    return z[:, 0] if k == 1 else z


def chunk_summary(
    x: np.ndarray,
    y: np.ndarray | None,
    s: np.ndarray | None,
    *,
    samples_first: bool,
    check: "ChunkContext",
    moments: bool = False,
) -> dict:
    """Validate a chunk and summarize it for the first pass.

    Returns ``count``; with ``moments``, per-feature ``mean`` and ``m2`` (sum of squared
    deviations), both weighted by the sample weights ``s`` whose total is ``moment_weight`` (as
    scikit-learn's ``StandardScaler().fit(X, sample_weight=s)``); and, with labels, the sorted
    distinct ``labels`` (L,) with their ``counts``, summed ``weights`` (L,) and — for at most
    :data:`MAX_LABEL_SUMS` labels — ``label_sums`` (L, n), the weighted feature sums Σ s_i x_i
    over the samples of each label, from which the loss and gradient at θ = 0 follow without
    another pass (:func:`partials_at_zero`). All float64. Raises :class:`DataError` naming the
    chunk and sample for non-finite features, labels or weights, non-integral labels, negative
    weights or too many labels.
    """
    n = x.shape[1] if samples_first else x.shape[0]
    m_c = x.shape[0] if samples_first else x.shape[1]
    by_label = None
    if y is not None:
        y = np.asarray(y)
        check.labels(y)
        if s is not None:
            s = np.asarray(s, dtype=np.float64)
            check.weights(s)
        labels, inverse, counts = _distinct(y)
        if labels.size > MAX_CLASSES:
            raise DataError(
                f"y has {labels.size} distinct labels in {check.where()} (more than "
                f"{MAX_CLASSES}): logistic regression needs class labels, not a continuous target"
            )
        if labels.size <= MAX_LABEL_SUMS:
            by_label = aligned((labels.size, m_c))  # row l: s_i where y_i is label l, else 0
            by_label[:] = 0.0
            by_label[inverse, np.arange(m_c)] = 1.0 if s is None else s
            label_sums = np.zeros((labels.size, n))
    rows = min(block_samples(n), m_c)
    ones, sums, part = aligned((rows,)), aligned((n,)), aligned((n,))
    ones[:] = 1.0
    weighted = moments and s is not None
    block_weights = aligned((rows,)) if weighted else ones
    stats = (0.0, np.zeros(n), np.zeros(n))
    with single_threaded_blas(), np.errstate(invalid="ignore", over="ignore"):
        for b0, b1, xb in _blocks(x, n, samples_first):
            # Every sum below takes in every value of the block (a zero weight times NaN or inf
            # is NaN), so a NaN or inf anywhere in it shows in them: the block is scanned for
            # the culprit only then.
            finite = True
            wb = block_weights[: b1 - b0]
            if weighted:
                np.copyto(wb, s[b0:b1])
            if by_label is not None:
                for label, row in enumerate(by_label):
                    np.matmul(row[b0:b1], xb, out=part)
                    label_sums[label] += part
                    finite = finite and np.isfinite(part).all()
            if moments or by_label is None:
                np.matmul(wb, xb, out=sums)
                finite = finite and np.isfinite(sums).all()
            if not finite:
                check.features(x[b0:b1] if samples_first else x[:, b0:b1].T, b0)
            total = float(b1 - b0) if not weighted else float(wb.sum())
            if moments and total > 0:
                mean = sums / total
                xb -= mean  # the block's own copy, overwritten in place
                xb *= xb
                np.matmul(wb, xb, out=sums)
                stats = _merge_moments(stats, (total, mean, sums.copy()))
    out = {"count": m_c}
    if moments:
        out.update(moment_weight=stats[0], mean=stats[1], m2=stats[2])
    if y is None:
        return out
    weights = counts.astype(np.float64) if s is None else np.bincount(inverse, weights=s)
    out.update(labels=labels.astype(np.int64), counts=counts, weights=weights)
    if by_label is not None:
        out["label_sums"] = label_sums
    return out


def _distinct(y: np.ndarray):
    """``np.unique(y, return_inverse=True, return_counts=True)``; by counting (faster than
    sorting, see benchmarks/README.md) when ``y`` holds small non-negative integers, as class
    labels do."""
    if y.dtype == np.bool_:
        y = y.view(np.uint8)
    if y.dtype.kind in "iu" and y.size and 0 <= y.min() and y.max() < 1 << 16:
        counts = np.bincount(y)
        labels = np.flatnonzero(counts)
        index = np.zeros(counts.size, dtype=np.intp)
        index[labels] = np.arange(labels.size)
        return labels, index[y], counts[labels]
    return np.unique(y, return_inverse=True, return_counts=True)


def _merge_moments(a, b):
    """Chan et al.'s pairwise update of (count, mean, m2)."""
    na, ma, qa = a
    nb, mb, qb = b
    total = na + nb
    if nb == 0:
        return a
    delta = mb - ma
    return total, ma + delta * (nb / total), qa + qb + delta**2 * (na * nb / total)


def merge_summaries(parts: list[dict]) -> dict:
    """Combine chunk summaries in chunk order (deterministic). ``label_sums`` survive only if
    every chunk has them."""
    stats = None
    if "mean" in parts[0]:
        stats = (0.0, np.zeros_like(parts[0]["mean"]), np.zeros_like(parts[0]["m2"]))
    labels: dict[int, list] = {}
    with_sums = all("label_sums" in p for p in parts)
    for p in parts:
        if stats is not None:
            stats = _merge_moments(stats, (p["moment_weight"], p["mean"], p["m2"]))
        sums = p["label_sums"] if with_sums else [None] * len(p.get("labels", ()))
        for label, count, weight, total in zip(
            p.get("labels", ()), p.get("counts", ()), p.get("weights", ()), sums, strict=True
        ):
            entry = labels.setdefault(int(label), [0, 0.0, 0.0])
            entry[0] += int(count)
            entry[1] += float(weight)
            if with_sums:
                entry[2] = entry[2] + total
    out = {"count": sum(p["count"] for p in parts)}
    if stats is not None:
        out.update(moment_weight=stats[0], mean=stats[1], m2=stats[2])
    if "labels" in parts[0]:
        keys = sorted(labels)
        out.update(
            labels=np.array(keys, dtype=np.int64),
            counts=np.array([labels[c][0] for c in keys], dtype=np.int64),
            weights=np.array([labels[c][1] for c in keys]),
        )
        if with_sums:
            out["label_sums"] = np.array([labels[c][2] for c in keys]).reshape(len(keys), -1)
    return out


def partials_at_zero(summary: dict, targets: np.ndarray, weights: np.ndarray | None, k: int):
    """What :func:`chunk_partials` would sum over the data at θ = 0, from a merged summary.

    At θ = 0 every logit is 0, so each sample's loss is log 2 (binary) or log K and its
    residual depends only on its label: p − onehot(t) with p = 1/2 or 1/K. With the summary's
    per-label weight totals W_l and feature sums S_l (L, n):

        loss = log(2 or K)·Σ_l c_l W_l,   grad = Σ_l c_l (p − onehot(t_l)) ⊗ [S_l, W_l]

    ``targets`` (L,) are the labels' encoded targets, ``weights`` (L,) their class weights c_l
    (None for 1); ``k`` the number of parameter rows (1 binary, K multinomial).
    """
    c = np.ones(len(targets)) if weights is None else np.asarray(weights, dtype=np.float64)
    totals = np.column_stack([summary["label_sums"], summary["weights"]])  # (L, n + 1)
    if k == 1:
        residual = (0.5 - np.asarray(targets, dtype=np.float64))[:, None]  # (L, 1)
        loss = np.log(2.0)
    else:
        residual = np.full((len(targets), k), 1.0 / k)
        residual[np.arange(len(targets)), np.asarray(targets, dtype=np.intp)] -= 1.0
        loss = np.log(k)
    return {
        "loss": np.array(loss * dot(c, summary["weights"])),
        "grad": matmul((residual * c[:, None]).T, totals),
    }
