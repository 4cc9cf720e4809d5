"""Per-chunk kernels: one visit to a chunk yields every partial sum a pass needs.

Pure NumPy: no dask, no I/O. A chunk is walked in blocks of samples small enough to stay in the
CPU cache; each block is copied once into a float64 buffer (exact for float32 and integer data)
and everything is computed while the block is hot, so the chunk is read from memory once,
float32 chunks stay float32 in memory, and all arithmetic and accumulation is float64.

Parameters come as ``theta`` of shape (k, n + 1), one row ``[w_c | b_c]`` per linear function:

- k = 1: binary logistic regression, σ(wᵀx + b), labels ``y`` in {0, 1};
- k = K ≥ 3: multinomial, softmax over K logits, ``y`` holding class indices 0..K-1.

Samples may carry weights ``s`` (None means all ones). For a chunk, :func:`chunk_partials` gives

    loss = Σ s_i ℓ(z_i, y_i)
    grad = Σ s_i (p_i − onehot(y_i)) ⊗ [x_i, 1]                  shape (k, n + 1)
    hess = Σ s_i ∂²ℓ/∂θ² (optional)                              shape (k(n+1), k(n+1))

with θ flattened row by row. Binary: ℓ = log(1 + eᶻ) − y·z and ∂²ℓ = a(1 − a)·[x, 1][x, 1]ᵀ.
"""

import threading
from contextlib import contextmanager

import numpy as np
from threadpoolctl import ThreadpoolController

from dlr.errors import DataError
from dlr.linalg import aligned
from dlr.logistic import softplus_and_sigmoid

BLOCK_BYTES = 4 << 20
MIN_BLOCK_SAMPLES = 64

#: More distinct labels than this in a classification target is an error, not a model.
MAX_CLASSES = 1000


def block_samples(n_features: int) -> int:
    """Samples per cache-sized block. Depends on n only, so the summation order is fixed."""
    return max(MIN_BLOCK_SAMPLES, BLOCK_BYTES // (8 * n_features))


def _blocks(x: np.ndarray, n: int, samples_first: bool):
    """Yield (start, stop, xb) over cache-sized sample blocks of a chunk, ``xb`` a float64 copy
    (k, n) of the block's samples (a transposed view for features-first chunks), in an aligned
    buffer reused from block to block (see :mod:`dlr.linalg` for why aligned)."""
    m_c = x.shape[0] if samples_first else x.shape[1]
    rows = min(block_samples(n), m_c)
    buf = aligned((rows, n) if samples_first else (n, rows))
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


class _Workspace:
    """Aligned scratch buffers for the blocks of one chunk: (rows,) vectors, (rows, k) and
    (rows, n) matrices, and the parameters copied out of ``theta``."""

    def __init__(self, rows: int, theta: np.ndarray, hessian: bool):
        k, n1 = theta.shape
        n = n1 - 1
        self.wt = aligned((n, k))  # Wᵀ, as BLAS multiplies it
        self.wt[:] = theta[:, :n].T
        self.b = theta[:, n].copy()
        self.z = aligned((rows, k))
        self.p = aligned((rows, k))
        self.v1, self.v2, self.v3 = aligned((rows,)), aligned((rows,)), aligned((rows,))
        self.sp, self.sa, self.st = aligned((rows,)), aligned((rows,)), aligned((rows,))
        self.g = aligned((k, n))
        self.hx = aligned((rows, n)) if hessian else None
        self.hxx = aligned((n, n)) if hessian else None
        self.hxb = aligned((n,)) if hessian else None


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
    ws = _Workspace(min(block_samples(n), m_c), theta, hessian)
    block = _binary_block if k == 1 else _multinomial_block
    with single_threaded_blas():
        for b0, b1, xb in _blocks(x, n, samples_first):
            sb = None if s is None else s[b0:b1]
            block(xb, y[b0:b1], sb, ws, out)
    if hessian:
        _symmetrize(out["hess"], k, n1)
    return out


def _binary_block(xb, yb, sb, ws: _Workspace, out):
    """Accumulate one block of the binary model into ``out`` (see :func:`chunk_partials`)."""
    rows, n = xb.shape
    z, y, tmp = ws.z[:rows, 0], ws.v1[:rows], ws.v2[:rows]
    np.matmul(xb, ws.wt, out=ws.z[:rows])
    z += ws.b[0]
    np.copyto(y, yb, casting="unsafe")
    loss, dz = softplus_and_sigmoid(z, (ws.sp[:rows], ws.sa[:rows], ws.st[:rows]))
    h = None
    if "hess" in out:  # a(1 − a), before dz = a − y overwrites a
        h = ws.v3[:rows]
        np.subtract(1.0, dz, out=ws.st[:rows])
        np.multiply(dz, ws.st[:rows], out=h)
    dz -= y
    np.multiply(y, z, out=tmp)
    if sb is None:
        out["loss"] += loss.sum() - tmp.sum()
    else:
        loss -= tmp
        loss *= sb
        out["loss"] += loss.sum()
        dz *= sb
    np.matmul(dz, xb, out=ws.g[0])
    out["grad"][0, :n] += ws.g[0]
    out["grad"][0, n] += dz.sum()
    if h is not None:
        if sb is not None:
            h *= sb
        _add_hessian_block(out["hess"], 0, 0, xb, h, ws)


def _multinomial_block(xb, yb, sb, ws: _Workspace, out):
    """Accumulate one block of the K-class softmax model into ``out``."""
    rows, n = xb.shape
    k = ws.b.shape[0]
    index = np.arange(rows)
    yb = np.asarray(yb, dtype=np.intp)
    z, p = ws.z[:rows], ws.p[:rows]
    np.matmul(xb, ws.wt, out=z)
    z += ws.b
    zmax = z.max(axis=1)
    np.subtract(z, zmax[:, None], out=p)
    np.exp(p, out=p)
    total = p.sum(axis=1)
    p /= total[:, None]
    loss = zmax + np.log(total) - z[index, yb]
    probabilities = p.copy() if "hess" in out else None
    p[index, yb] -= 1.0  # p is now the residual P − onehot(y)
    if sb is None:
        out["loss"] += loss.sum()
    else:
        loss *= sb
        out["loss"] += loss.sum()
        p *= sb[:, None]
    np.matmul(p.T, xb, out=ws.g)
    out["grad"][:, :n] += ws.g
    out["grad"][:, n] += p.sum(axis=0)
    if probabilities is not None:
        h = ws.v3[:rows]
        for c in range(k):
            for d in range(c, k):
                np.multiply(probabilities[:, c], (c == d) - probabilities[:, d], out=h)
                if sb is not None:
                    h *= sb
                _add_hessian_block(out["hess"], c, d, xb, h, ws)


def _add_hessian_block(hess, c, d, xb, h, ws: _Workspace):
    """hess[c, d] block += [xb, 1]ᵀ·diag(h)·[xb, 1] (upper triangle of blocks only)."""
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

    Features are validated first when ``check`` (a :class:`ChunkContext`) is given.
    """
    k, n1 = theta.shape
    m_c = x.shape[0] if samples_first else x.shape[1]
    rows = min(block_samples(n1 - 1), m_c)
    ws = _Workspace(rows, theta, False)
    z = np.empty((m_c, k))
    with single_threaded_blas():
        for b0, b1, xb in _blocks(x, n1 - 1, samples_first):
            if check is not None:
                check.features(xb, b0)
            np.matmul(xb, ws.wt, out=ws.z[: b1 - b0])
            np.add(ws.z[: b1 - b0], ws.b, out=z[b0:b1])
    return z[:, 0] if k == 1 else z


def chunk_summary(
    x: np.ndarray,
    y: np.ndarray | None,
    s: np.ndarray | None,
    *,
    samples_first: bool,
    check: "ChunkContext",
) -> dict:
    """Validate a chunk and summarize it for the first pass.

    Returns ``count``; per-feature ``mean`` and ``m2`` (sum of squared deviations), float64;
    and, with labels, the sorted distinct ``labels`` with their ``counts`` and summed
    ``weights``. Raises :class:`DataError` naming the chunk and sample for non-finite
    features, labels or weights, non-integral labels, negative weights or too many labels.
    """
    n = x.shape[1] if samples_first else x.shape[0]
    moments = (0, np.zeros(n), np.zeros(n))
    with single_threaded_blas():
        for b0, _, xb in _blocks(x, n, samples_first):
            check.features(xb, b0)
            mean = xb.mean(axis=0)
            moments = _merge_moments(moments, (xb.shape[0], mean, ((xb - mean) ** 2).sum(axis=0)))
    out = {"count": moments[0], "mean": moments[1], "m2": moments[2]}
    if y is None:
        return out
    y = np.asarray(y)
    check.labels(y)
    if s is not None:
        s = np.asarray(s, dtype=np.float64)
        check.weights(s)
    labels, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if labels.size > MAX_CLASSES:
        raise DataError(
            f"y has {labels.size} distinct labels in {check.where()} (more than {MAX_CLASSES}): "
            "logistic regression needs class labels, not a continuous target"
        )
    weights = counts.astype(np.float64) if s is None else np.bincount(inverse, weights=s)
    out.update(labels=labels.astype(np.int64), counts=counts, weights=weights)
    return out


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
    """Combine chunk summaries in chunk order (deterministic)."""
    moments = (0, np.zeros_like(parts[0]["mean"]), np.zeros_like(parts[0]["m2"]))
    labels: dict[int, list] = {}
    for p in parts:
        moments = _merge_moments(moments, (p["count"], p["mean"], p["m2"]))
        for label, count, weight in zip(
            p.get("labels", ()), p.get("counts", ()), p.get("weights", ()), strict=True
        ):
            entry = labels.setdefault(int(label), [0, 0.0])
            entry[0] += int(count)
            entry[1] += float(weight)
    out = {"count": moments[0], "mean": moments[1], "m2": moments[2]}
    if "labels" in parts[0]:
        keys = sorted(labels)
        out.update(
            labels=np.array(keys, dtype=np.int64),
            counts=np.array([labels[c][0] for c in keys], dtype=np.int64),
            weights=np.array([labels[c][1] for c in keys]),
        )
    return out


class ChunkContext:
    """Where a chunk comes from, so that a bad value can be reported precisely."""

    def __init__(self, origin: str, chunk: int, start: int, stop: int):
        self.origin, self.chunk, self.start, self.stop = origin, chunk, start, stop

    def where(self) -> str:
        return f"{self.origin}, chunk {self.chunk} (samples {self.start}–{self.stop - 1})"

    def _first(self, ok: np.ndarray, offset: int = 0) -> int:
        return self.start + offset + int(np.argmin(ok))

    def features(self, xb: np.ndarray, offset: int) -> None:
        """Raise if block ``xb`` (k, n), starting at sample ``offset`` of the chunk, has NaN/inf."""
        finite = np.isfinite(xb).all(axis=1)
        if not finite.all():
            first = self._first(finite, offset)
            raise DataError(f"X holds NaN or inf in {self.where()}: first at sample {first}")

    def labels(self, y: np.ndarray) -> None:
        """Raise unless every label is a finite integer."""
        if y.dtype.kind == "f":
            finite = np.isfinite(y)
            if not finite.all():
                raise DataError(
                    f"y holds NaN or inf in {self.where()}: first at sample {self._first(finite)}"
                )
            integral = y == np.round(y)
            if not integral.all():
                i = int(np.argmin(integral))
                raise DataError(
                    f"y must hold integer class labels (not a continuous target), but "
                    f"{self.where()} has {y[i]:g} at sample {self.start + i}"
                )

    def weights(self, s: np.ndarray) -> None:
        """Raise unless every sample weight is finite and ≥ 0."""
        ok = np.isfinite(s) & (s >= 0)
        if not ok.all():
            i = int(np.argmin(ok))
            raise DataError(
                f"sample weights must be finite and ≥ 0, but {self.where()} has {s[i]:g} "
                f"at sample {self.start + i}"
            )


_process_limit = None


def pin_blas_for_process() -> None:
    """Pin BLAS to one thread for the rest of this process (dask workers: run from their main
    thread through ``Client.run`` before any dlr task)."""
    global _process_limit
    if _process_limit is None:
        _process_limit = ThreadpoolController().limit(limits=1, user_api="blas")


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limit = None
_blas_controller = None


@contextmanager
def single_threaded_blas():
    """Pin BLAS to one thread while any kernel in this process runs.

    A multi-threaded gemv may split and re-associate sums, so results would depend on the BLAS
    thread count. The limit is process-wide in BLAS libraries, hence the reference count: it is set
    when the first user enters and lifted when the last one leaves, never under a running kernel.

    OpenBLAS ignores a limit set from a thread other than the main one once the main thread has
    changed it, so the engine enters this from the thread that runs the scheduler, around every
    pass; kernels on the scheduler's worker threads then find it held.
    """
    global _blas_users, _blas_limit, _blas_controller
    with _blas_lock:
        if _blas_users == 0:
            if _blas_controller is None:
                _blas_controller = ThreadpoolController()
            _blas_limit = _blas_controller.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limit.restore_original_limits()
                _blas_limit = None
