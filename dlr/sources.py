"""Training data as a sequence of sample chunks, whatever holds it: zarr, NumPy or dask.

A :class:`Source` pairs a feature column and an optional label column, each able to say, for
chunk i, how to get that chunk inside a dask graph (:meth:`expr`): a read task for zarr, the
array slice itself for NumPy, a key of the array's graph for dask. The engine nests these
expressions inside its kernel tasks, so a streamed chunk is read and used in the same task.
"""

import math
import warnings
from dataclasses import dataclass, field

import dask.array as da
import numpy as np
import zarr
from sklearn.exceptions import DataConversionWarning

from dlr.cf import Packing
from dlr.chunks import ChunkContext
from dlr.dataset import (
    Dataset,
    check_dtype,
    check_not_empty,
    check_per_sample,
    dataset_of,
    not_2d_message,
    regular_bounds,
)
from dlr.decode import DirectDecoder, read_block
from dlr.errors import DataError, DataTypeError

#: Samples per chunk for in-memory NumPy input: about this many bytes of features.
IN_MEMORY_CHUNK_BYTES = 32 << 20


class NumpyChunks:
    """Chunks of an in-memory array: views, already decoded."""

    in_memory = True
    graph: dict = {}

    def __init__(self, arr: np.ndarray, bounds, samples_first: bool):
        self.arr, self.bounds, self.samples_first = arr, bounds, samples_first

    def expr(self, i: int, *, capture: bool = False, streamed: bool = True):
        s, e = self.bounds[i]
        return self.arr[s:e] if self.arr.ndim == 1 or self.samples_first else self.arr[:, s:e]


class ZarrChunks:
    """Chunks of a zarr array, read and decoded by the task that uses them."""

    in_memory = False
    graph: dict = {}

    def __init__(
        self,
        arr: zarr.Array,
        bounds,
        samples_first: bool,
        origin: str,
        decoder: DirectDecoder | None,
        packing: Packing | None = None,
    ):
        self.arr, self.bounds, self.samples_first = arr, bounds, samples_first
        self.origin, self.decoder, self.packing = origin, decoder, packing

    def expr(self, i: int, *, capture: bool = False, streamed: bool = True):
        """The read task; with ``capture``, a failed read yields its DataError as the value.

        ``streamed`` reads into a buffer the thread's next read reuses: for a task that reads
        and uses the chunk (and keeps nothing), not for chunks kept in the cache.
        """
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
            streamed,
            self.decoder,
            self.packing,
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

    def expr(self, i: int, *, capture: bool = False, streamed: bool = True):
        return self.keys[i]


@dataclass(frozen=True)
class Source:
    """Features, optional labels and optional sample weights, split into sample chunks.

    ``bounds[i]`` is the (start, stop) sample range of chunk i. ``x`` chunks are (m_c, n) when
    ``samples_first``, else (n, m_c); ``y`` and ``s`` chunks are (m_c,).
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
    s: object | None = None

    @property
    def n_chunks(self) -> int:
        return len(self.bounds)

    def chunk_nbytes(self, i: int) -> int:
        """Decoded size of chunk i (features, labels, weights) in memory."""
        s, e = self.bounds[i]
        return (e - s) * (self.n_features * self.dtype.itemsize + 16)

    def exprs(self, i: int, *, streamed: bool = True) -> tuple:
        """Graph expressions of chunk i's (x, y, s); None for absent columns. ``streamed``
        expressions may reuse a per-thread buffer (see :meth:`ZarrChunks.expr`)."""
        return tuple(
            c.expr(i, streamed=streamed) if c is not None else None
            for c in (self.x, self.y, self.s)
        )

    def context(self, i: int) -> ChunkContext:
        """Where chunk i comes from, for errors naming it."""
        return ChunkContext(self.origin, i, *self.bounds[i])

    @property
    def graph(self) -> dict:
        """Extra graph the expressions refer to (dask input); empty otherwise."""
        return {k: v for c in (self.x, self.y, self.s) if c is not None for k, v in c.graph.items()}

    @property
    def in_memory(self) -> bool:
        return all(c.in_memory for c in (self.x, self.y, self.s) if c is not None)


def from_dataset(ds: Dataset) -> Source:
    """The source of an opened dataset (see :func:`dlr.dataset.open_dataset`)."""
    where = f"'{ds.url}'"
    (dx, dy, ds_), (px, py, ps) = ds.decoders, ds.packings
    return Source(
        origin=where,
        x=ZarrChunks(ds.x, ds.bounds, ds.samples_first, where, dx, px),
        y=ZarrChunks(ds.y, ds.bounds, True, where, dy, py) if ds.y is not None else None,
        n_samples=ds.n_samples,
        n_features=ds.n_features,
        samples_first=ds.samples_first,
        bounds=ds.bounds,
        dtype=(px.dtype if px is not None else ds.x.dtype).newbyteorder("="),
        fingerprint=ds.fingerprint(),
        s=ZarrChunks(ds.s, ds.bounds, True, where, ds_, ps) if ds.s is not None else None,
    )


def from_arrays(X, y=None, sample_weight=None) -> Source:
    """A source over in-memory, dask or zarr arrays; ``X`` is samples × features.

    A zarr ``X`` may instead be features × samples if its dimension names say so (see
    :func:`dlr.dataset.layout_of`). ``y`` and ``sample_weight`` may each be NumPy, dask or zarr
    arrays of shape (m,).
    """
    zarr_source = None
    if isinstance(X, zarr.Array):
        zarr_y, zarr_s = (a if isinstance(a, zarr.Array) else None for a in (y, sample_weight))
        ds = dataset_of(str(X.store_path.store), X, zarr_y, zarr_s)
        zarr_source = from_dataset(ds)
        where, samples_first, bounds = zarr_source.origin, ds.samples_first, ds.bounds
        m, n, xc = ds.n_samples, ds.n_features, zarr_source.x
        fp = {"kind": "zarr", "url": ds.url, "chunk_samples": ds.chunk_samples}
    elif isinstance(X, da.Array):
        where, samples_first = "the input dask array", True
        _check_dask(X, "X")
        m, n = _check_x_shape(X.shape, X.dtype, "X")
        X = X.rechunk({1: -1})
        starts = np.cumsum((0,) + X.chunks[0])
        bounds = tuple((int(s), int(e)) for s, e in zip(starts[:-1], starts[1:], strict=True))
        xc = DaskChunks(X)
        fp = {"kind": "dask", "name": X.name}
    else:
        where, samples_first = "the input array", True
        X = _as_numpy(X, "X")
        m, n = _check_x_shape(X.shape, X.dtype, "X")
        bounds = regular_bounds(m, max(1, IN_MEMORY_CHUNK_BYTES // (n * X.dtype.itemsize)))
        xc = NumpyChunks(X, bounds, True)
        fp = {"kind": "numpy"}
    fp.update(shape=[m, n], dtype=str(X.dtype))

    def column(a, name, attribute):
        if isinstance(a, zarr.Array) and zarr_source is not None:
            return getattr(zarr_source, attribute)  # validated with X
        return _column(a, name, m, bounds)

    return Source(
        where,
        xc,
        column(y, "y", "y"),
        m,
        n,
        samples_first,
        bounds,
        zarr_source.dtype if zarr_source is not None else X.dtype.newbyteorder("="),
        fp,
        column(sample_weight, "sample_weight", "s"),
    )


def _column(a, name: str, m: int, bounds):
    """A per-sample array (labels or weights) read in the features' chunks, or None."""
    if a is None:
        return None
    if isinstance(a, zarr.Array):
        column = check_per_sample(a, m, str(a.store_path), name, stored=False)
        return ZarrChunks(a, bounds, True, f"'{a.store_path}'", column.decoder, column.packing)
    if isinstance(a, da.Array):
        _check_dask(a, name)
    else:
        a = _as_numpy(a, name)
    if a.ndim == 2 and a.shape == (m, 1):
        warnings.warn(
            f"A column-vector y was passed when a 1d array was expected: {name} of shape "
            f"({m}, 1) is read as ({m},)",
            DataConversionWarning,
            stacklevel=4,
        )
        a = a[:, 0]
    if a.ndim != 1 or a.shape[0] != m:
        raise DataError(f"{name} has shape {tuple(a.shape)} but X has {m} samples; expected ({m},)")
    check_dtype(np.dtype(a.dtype), name, kinds="biuf")
    if isinstance(a, da.Array):
        return DaskChunks(a.rechunk((tuple(e - s for s, e in bounds),)))
    return NumpyChunks(a, bounds, True)


def _as_numpy(a, what: str) -> np.ndarray:
    """``a`` as a NumPy array; object arrays of numbers become float64."""
    if hasattr(a, "toarray") or type(a).__module__.startswith("scipy.sparse"):
        raise DataTypeError(
            f"{what} is a sparse matrix: sparse input is not supported; pass a dense array "
            "(X.toarray()) or store the data dense in zarr"
        )
    try:
        a = np.asarray(a)
        if a.dtype.kind == "O":
            a = a.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise DataTypeError(f"{what} cannot be read as an array of numbers: {e}") from None
    return a


def _check_dask(a: da.Array, what: str) -> None:
    """Refuse dask arrays dlr cannot chunk (unknown chunk sizes) or read (sparse blocks)."""
    if any(math.isnan(c) for c in a.shape):
        raise DataError(
            f"{what} is a dask array with unknown chunk sizes; call "
            f"{what}.compute_chunk_sizes() first"
        )
    meta = type(getattr(a, "_meta", None))
    if meta.__module__.split(".")[0] in ("scipy", "sparse", "cupyx") or hasattr(meta, "toarray"):
        raise DataTypeError(
            f"{what} is a dask array of {meta.__module__}.{meta.__name__} blocks: sparse input "
            f"is not supported; pass dense blocks ({what}.map_blocks(lambda b: b.toarray()))"
        )


def _check_x_shape(shape, dtype, what: str) -> tuple[int, int]:
    if len(shape) != 2:
        raise DataError(not_2d_message(what, shape))
    check_dtype(np.dtype(dtype), what)
    m, n = shape
    check_not_empty(m, n, what)
    return int(m), int(n)
