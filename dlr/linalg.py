"""Linear algebra whose bits do not depend on memory alignment or on BLAS's thread count.

BLAS and LAPACK kernels may split a sum differently depending on the alignment of their
operands, and NumPy places arrays wherever the allocator says: the same computation could give
results one ulp apart from one process to the next. Everything here hands BLAS only 64-byte
aligned buffers, and vector dot products use NumPy's pairwise summation instead of BLAS.

A multi-threaded BLAS may also split and re-associate a sum by its number of threads, so every
kernel runs with BLAS pinned to one thread (:func:`single_threaded_blas`,
:func:`pin_blas_for_process`); dask supplies the parallelism, one chunk per thread.
"""

import threading
from contextlib import contextmanager

import numpy as np
from scipy.linalg import lapack
from threadpoolctl import ThreadpoolController

from dlr.memory import ALIGN


def aligned(shape, order: str = "C") -> np.ndarray:
    """An uninitialized float64 array of ``shape`` starting on an ``ALIGN``-byte boundary,
    C-ordered (``order="C"``) or Fortran-ordered (``"F"``, as LAPACK wants it)."""
    shape = tuple(np.atleast_1d(shape))
    size = int(np.prod(shape))
    raw = np.empty(size + ALIGN // 8)
    start = (-raw.ctypes.data % ALIGN) // 8
    flat = raw[start : start + size]
    return flat.reshape(shape) if order == "C" else flat.reshape(shape[::-1]).T


def aligned_copy(a: np.ndarray, order: str = "C") -> np.ndarray:
    """A float64 copy of ``a`` (same shape) in an :func:`aligned` buffer."""
    out = aligned(np.shape(a), order)
    out[...] = a
    return out


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Σ aᵢ·bᵢ of two vectors, by pairwise summation (alignment-independent)."""
    return float(np.multiply(a, b).sum())


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b of ``a`` (p, q) and ``b`` (q, r): (p, r) float64, computed on aligned copies."""
    a, b = aligned_copy(a), aligned_copy(b)
    out = aligned((a.shape[0], b.shape[1]))
    return np.matmul(a, b, out=out)


def spd_solve(H: np.ndarray, b: np.ndarray, damping: float) -> np.ndarray | None:
    """(H + damping·I)⁻¹·b by Cholesky, on aligned buffers; None if not positive definite.

    ``H`` (p, p) symmetric, ``b`` (p,); returns (p,) float64.
    """
    factor = aligned_copy(H, order="F")
    factor[np.diag_indices_from(factor)] += damping
    c, info = lapack.dpotrf(factor, lower=0, clean=1, overwrite_a=1)
    if info != 0:
        return None
    rhs = aligned_copy(np.asarray(b, dtype=np.float64).reshape(-1, 1), order="F")
    x, info = lapack.dpotrs(c, rhs, lower=0, overwrite_b=1)
    if info != 0:
        return None
    return x[:, 0].copy()


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
