"""Training data as a sequence of sample chunks, whatever holds it: zarr, NumPy or dask.

A :class:`Source` pairs a feature column and an optional label column, each able to say, for
chunk i, how to get that chunk inside a dask graph (:meth:`expr`): a read task for zarr, the
array slice itself for NumPy, a key of the array's graph for dask. The engine nests these
expressions inside its kernel tasks, so a streamed chunk is read and used in the same task.
"""

import math
from dataclasses import dataclass, field

import dask.array as da
import numpy as np
import zarr

from dlr.dataset import (
    Dataset,
    check_chunks_present,
    check_dtype,
    check_features_array,
    check_labels_array,
    read_block,
    sample_chunking,
)
from dlr.errors import DataError

#: Samples per chunk for in-memory NumPy input: about this many bytes of features.
IN_MEMORY_CHUNK_BYTES = 32 << 20


class NumpyChunks:
    """Chunks of an in-memory array: views, already decoded."""

    in_memory = True
    graph: dict = {}

    def __init__(self, arr: np.ndarray, bounds, samples_first: bool):
        self.arr, self.bounds, self.samples_first = arr, bounds, samples_first

    def expr(self, i: int, *, capture: bool = False):
        s, e = self.bounds[i]
        return self.arr[s:e] if self.arr.ndim == 1 or self.samples_first else self.arr[:, s:e]


class ZarrChunks:
    """Chunks of a zarr array, read and decoded by the task that uses them."""

    in_memory = False
    graph: dict = {}

    def __init__(self, arr: zarr.Array, bounds, samples_first: bool, origin: str):
        self.arr, self.bounds, self.samples_first, self.origin = arr, bounds, samples_first, origin

    def expr(self, i: int, *, capture: bool = False):
        """The read task; with ``capture``, a failed read yields its DataError as the value."""
        # Only this chunk's coordinates travel with the task, not the whole chunk table.
        s, e = self.bounds[i]
        return (
            _read_or_error if capture else read_block,
            self.arr,
            self.samples_first,
            s,
            e,
            self.origin,
            i,
        )


def _read_or_error(*args):
    try:
        return read_block(*args)
    except DataError as e:
        return e


class DaskChunks:
    """Chunks of a dask array, computed from its graph when used."""

    in_memory = False

    def __init__(self, arr: da.Array):
        self.graph = dict(arr.__dask_graph__())
        keys = arr.__dask_keys__()
        self.keys = [k[0] for k in keys] if arr.ndim == 2 else list(keys)

    def expr(self, i: int, *, capture: bool = False):
        return self.keys[i]


@dataclass(frozen=True)
class Source:
    """Features (and labels, unless predicting) split into sample chunks.

    ``bounds[i]`` is the (start, stop) sample range of chunk i. ``x`` chunks are (m_c, n) when
    ``samples_first``, else (n, m_c); ``y`` chunks are (m_c,).
    """

    origin: str
    x: object
    y: object | None
    n_samples: int
    n_features: int
    samples_first: bool
    bounds: tuple
    dtype: np.dtype
    fingerprint: dict = field(compare=False)

    @property
    def n_chunks(self) -> int:
        return len(self.bounds)

    def chunk_nbytes(self, i: int) -> int:
        """Decoded size of chunk i (features and labels) in memory."""
        s, e = self.bounds[i]
        return (e - s) * (self.n_features * self.dtype.itemsize + 8)


def from_dataset(ds: Dataset) -> Source:
    bounds = tuple(ds.chunk_bounds())
    where = f"'{ds.url}'"
    return Source(
        origin=where,
        x=ZarrChunks(ds.x, bounds, ds.samples_first, where),
        y=ZarrChunks(ds.y, bounds, True, where) if ds.y is not None else None,
        n_samples=ds.n_samples,
        n_features=ds.n_features,
        samples_first=ds.samples_first,
        bounds=bounds,
        dtype=ds.x.dtype,
        fingerprint=ds.fingerprint(),
    )


def from_arrays(X, y=None) -> Source:
    """A source over in-memory, dask or zarr arrays; ``X`` is samples × features.

    A zarr ``X`` may instead be features × samples if its ``dimension_names`` say so.
    """
    if isinstance(X, zarr.Array):
        return _from_zarr(X, y)
    if isinstance(X, da.Array):
        return _from_dask(X, y)
    X = _as_numpy(X, "X")
    m, n = _check_x_shape(X.shape, X.dtype, "X")
    c = max(1, IN_MEMORY_CHUNK_BYTES // max(1, n * X.dtype.itemsize))
    bounds = tuple((s, min(s + c, m)) for s in range(0, m, c))
    yc = None
    if y is not None:
        y = _labels(y, m)
        yc = NumpyChunks(y, bounds, True) if not isinstance(y, da.Array) else _dask_y(y, bounds)
    return Source(
        "the input array",
        NumpyChunks(X, bounds, True),
        yc,
        m,
        n,
        True,
        bounds,
        X.dtype,
        {"kind": "numpy", "shape": [m, n], "dtype": str(X.dtype)},
    )


def _from_zarr(X: zarr.Array, y) -> Source:
    where = f"'{X.store_path}'"
    samples_first = check_features_array(X, str(X.store_path))
    m, n = X.shape if samples_first else X.shape[::-1]
    c = sample_chunking(X, samples_first)
    check_chunks_present(X, str(X.store_path))
    bounds = tuple((s, min(s + c, m)) for s in range(0, m, c))
    yc = None
    if y is not None:
        if isinstance(y, zarr.Array):
            check_labels_array(y, m, c, str(y.store_path))
            check_chunks_present(y, str(y.store_path))
            yc = ZarrChunks(y, bounds, True, f"'{y.store_path}'")
        else:
            y = _labels(y, m)
            yc = NumpyChunks(y, bounds, True) if not isinstance(y, da.Array) else _dask_y(y, bounds)
    fp = {
        "kind": "zarr",
        "url": str(X.store_path),
        "shape": [m, n],
        "chunk_samples": c,
        "dtype": str(X.dtype),
    }
    return Source(
        where,
        ZarrChunks(X, bounds, samples_first, where),
        yc,
        m,
        n,
        samples_first,
        bounds,
        X.dtype,
        fp,
    )


def _from_dask(X: da.Array, y) -> Source:
    m, n = _check_x_shape(X.shape, X.dtype, "X")
    if any(math.isnan(c) for c in X.chunks[0]):
        raise DataError("X is a dask array with unknown chunk sizes; call X.compute_chunk_sizes()")
    X = X.rechunk({1: -1})
    starts = np.cumsum((0,) + X.chunks[0])
    bounds = tuple((int(s), int(e)) for s, e in zip(starts[:-1], starts[1:], strict=True))
    yc = None
    if y is not None:
        y = _labels(y, m)
        yc = _dask_y(y if isinstance(y, da.Array) else da.from_array(y, chunks=X.chunks[0]), bounds)
    fp = {"kind": "dask", "name": X.name, "shape": [m, n], "dtype": str(X.dtype)}
    return Source("the input dask array", DaskChunks(X), yc, m, n, True, bounds, X.dtype, fp)


def _dask_y(y: da.Array, bounds) -> DaskChunks:
    return DaskChunks(y.rechunk((tuple(e - s for s, e in bounds),)))


def _as_numpy(a, what: str) -> np.ndarray:
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as e:
        raise DataError(f"{what} cannot be read as an array: {e}") from None


def _check_x_shape(shape, dtype, what: str) -> tuple[int, int]:
    if len(shape) != 2:
        raise DataError(f"{what} must be 2-D (samples × features), got shape {tuple(shape)}")
    check_dtype(np.dtype(dtype), what)
    m, n = shape
    if m == 0 or n == 0:
        raise DataError(f"{what} has {m} samples and {n} features; both must be at least 1")
    return int(m), int(n)


def _labels(y, m: int):
    if not isinstance(y, da.Array):
        y = _as_numpy(y, "y")
    if y.ndim != 1 or y.shape[0] != m:
        raise DataError(f"y has shape {tuple(y.shape)} but X has {m} samples; expected ({m},)")
    check_dtype(np.dtype(y.dtype), "y", kinds="biuf")
    return y
