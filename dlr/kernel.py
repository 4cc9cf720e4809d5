"""The per-chunk kernel: one visit to a chunk yields every partial sum an iteration needs.

Pure NumPy: no dask, no I/O. The chunk is walked in blocks of samples small enough to stay in the
CPU cache; each block is copied once into a float64 buffer (exact for float32 and integer data),
and the forward pass, the loss and both gradient sums are computed while the block is hot. So the
chunk is read from memory once, float32 chunks stay float32 in memory, and all arithmetic and
accumulation is float64.

The partial sums of a chunk c with samples x_i, labels y_i, logits z_i = wᵀx_i + b are packed in
one float64 vector of length n + 3 (see :data:`PARTS`):

    [ X_c·dZ_cᵀ (n values),  Σ dz_i,  Σ loss(z_i, y_i),  Σ y_i ]
"""

import threading
from contextlib import contextmanager

import numpy as np
from threadpoolctl import ThreadpoolController

from dlr.errors import DataError
from dlr.logistic import softplus_and_sigmoid

#: Offsets, after the n gradient entries, of the scalar partial sums in a kernel result.
PARTS = {"sum_dz": 0, "sum_loss": 1, "sum_y": 2}

BLOCK_BYTES = 4 << 20
MIN_BLOCK_SAMPLES = 64


def block_samples(n_features: int) -> int:
    """Samples per cache-sized block. Depends on n only, so the summation order is fixed."""
    return max(MIN_BLOCK_SAMPLES, BLOCK_BYTES // (8 * n_features))


def _blocks(x: np.ndarray, n: int, samples_first: bool):
    """Yield (start, stop, xb) over cache-sized sample blocks of a chunk, ``xb`` a float64 copy
    ((k, n) if ``samples_first`` else (n, k)) in a buffer reused from block to block."""
    m_c = x.shape[0] if samples_first else x.shape[1]
    rows = min(block_samples(n), m_c)
    buf = np.empty((rows, n) if samples_first else (n, rows))
    for s in range(0, m_c, rows):
        e = min(s + rows, m_c)
        xb = buf[: e - s] if samples_first else buf[:, : e - s]
        np.copyto(xb, x[s:e] if samples_first else x[:, s:e])
        yield s, e, xb


def chunk_partials(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    b: float,
    *,
    samples_first: bool,
    check: "ChunkContext | None" = None,
) -> np.ndarray:
    """Partial sums of one chunk at weights (w, b), in one visit.

    Parameters
    ----------
    x : (m_c, n) if ``samples_first`` else (n, m_c), any real dtype
    y : (m_c,) labels in {0, 1}
    w : (n,) float64
    b : float
    check : when given, the chunk's values are validated (finite features, labels in {0, 1})
        and errors name the chunk through it.

    Returns
    -------
    (n + 3,) float64: X_c·dZ_cᵀ, then Σdz, Σloss, Σy (offsets in :data:`PARTS`).
    """
    n = w.shape[0]
    out = np.zeros(n + 3)
    grad = out[:n]
    with single_threaded_blas():
        for s, e, xb in _blocks(x, n, samples_first):
            yb = np.asarray(y[s:e], dtype=np.float64)
            if check is not None:
                check.validate(xb, s, samples_first, yb)
            z = xb @ w if samples_first else w @ xb
            z += b
            loss, dz = softplus_and_sigmoid(z)
            dz -= yb
            out[n + PARTS["sum_loss"]] += loss.sum() - yb @ z
            out[n + PARTS["sum_dz"]] += dz.sum()
            out[n + PARTS["sum_y"]] += yb.sum()
            grad += dz @ xb if samples_first else xb @ dz
    return out


def chunk_logits(
    x: np.ndarray,
    w: np.ndarray,
    b: float,
    *,
    samples_first: bool,
    check: "ChunkContext | None" = None,
) -> np.ndarray:
    """Logits z = wᵀx + b of a chunk's samples, (m_c,) float64; features validated if ``check``."""
    n = w.shape[0]
    z = np.empty(x.shape[0] if samples_first else x.shape[1])
    with single_threaded_blas():
        for s, e, xb in _blocks(x, n, samples_first):
            if check is not None:
                check.validate(xb, s, samples_first)
            np.matmul(xb, w, out=z[s:e]) if samples_first else np.matmul(w, xb, out=z[s:e])
            z[s:e] += b
    return z


class ChunkContext:
    """Where a chunk comes from, so that a bad value can be reported precisely."""

    def __init__(self, origin: str, chunk: int, start: int, stop: int):
        self.origin, self.chunk, self.start, self.stop = origin, chunk, start, stop

    def where(self) -> str:
        return f"{self.origin}, chunk {self.chunk} (samples {self.start}–{self.stop - 1})"

    def validate(self, xb: np.ndarray, offset: int, samples_first: bool, yb=None) -> None:
        """Raise :class:`DataError` if block ``xb`` (or labels ``yb``), starting at sample
        ``offset`` of the chunk, holds non-finite features or labels outside {0, 1}."""
        finite = np.isfinite(xb).all(axis=1 if samples_first else 0)
        if not finite.all():
            first = self.start + offset + int(np.argmin(finite))
            raise DataError(f"X holds NaN or inf in {self.where()}: first at sample {first}")
        if yb is None:
            return
        finite = np.isfinite(yb)
        if not finite.all():
            first = self.start + offset + int(np.argmin(finite))
            raise DataError(f"y holds NaN or inf in {self.where()}: first at sample {first}")
        bad = (yb != 0) & (yb != 1)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"y must hold labels 0 and 1, but {self.where()} has {yb[i]:g} "
                f"at sample {self.start + offset + i}"
            )


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
