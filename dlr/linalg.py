"""Linear algebra whose bits do not depend on where memory happens to be.

BLAS and LAPACK kernels may split a sum differently depending on the alignment of their
operands, and NumPy places arrays wherever the allocator says: the same computation could give
results one ulp apart from one process to the next. Everything here hands BLAS only 64-byte
aligned buffers, and vector dot products use NumPy's pairwise summation instead of BLAS.
"""

import numpy as np
from scipy.linalg import lapack

ALIGN = 64


def aligned(shape, order: str = "C") -> np.ndarray:
    """An uninitialized float64 array of ``shape`` starting on an ``ALIGN``-byte boundary."""
    shape = tuple(np.atleast_1d(shape))
    size = int(np.prod(shape))
    raw = np.empty(size + ALIGN // 8)
    start = (-raw.ctypes.data % ALIGN) // 8
    flat = raw[start : start + size]
    return flat.reshape(shape) if order == "C" else flat.reshape(shape[::-1]).T


def aligned_copy(a: np.ndarray, order: str = "C") -> np.ndarray:
    out = aligned(np.shape(a), order)
    out[...] = a
    return out


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Σ aᵢ·bᵢ of two vectors, by pairwise summation (alignment-independent)."""
    return float(np.multiply(a, b).sum())


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for 2-D float arrays, computed on aligned copies."""
    a, b = aligned_copy(a), aligned_copy(b)
    out = aligned((a.shape[0], b.shape[1]))
    return np.matmul(a, b, out=out)


def spd_solve(H: np.ndarray, b: np.ndarray, damping: float) -> np.ndarray | None:
    """(H + damping·I)⁻¹·b by Cholesky, on aligned buffers; None if not positive definite."""
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
