"""The dlr dataset format: a zarr v3 group holding a feature array and a label array.

- ``X``: (m, n) with ``dimension_names == ("sample", "feature")``, or (n, m) with
  ``("feature", "sample")`` (the seed lecture's layout); chunked along the sample axis only.
- ``y``: (m,), labels in {0, 1}, chunked like ``X`` along the samples.

Arrays without dimension names are read as samples × features. ``url`` is a local path or any
fsspec URL (``s3://...``), with ``storage_options`` passed through to fsspec.
"""

import math
import os
import sys
import threading
from dataclasses import dataclass

import crc32c
import numpy as np
import zarr
from numcodecs import blosc
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

from dlr.atomic import is_local
from dlr.errors import DataError
from dlr.memory import per_thread, small_page_empty

SAMPLES_FIRST = ("sample", "feature")
FEATURES_FIRST = ("feature", "sample")
LAYOUTS = {"samples-first": SAMPLES_FIRST, "features-first": FEATURES_FIRST}


@dataclass(frozen=True)
class Dataset:
    """An opened, validated dataset. ``x`` and ``y`` are zarr arrays (``y`` may be None)."""

    url: str
    x: zarr.Array
    y: zarr.Array | None
    samples_first: bool
    s: zarr.Array | None = None

    @property
    def n_samples(self) -> int:
        return self.x.shape[0 if self.samples_first else 1]

    @property
    def n_features(self) -> int:
        return self.x.shape[1 if self.samples_first else 0]

    @property
    def chunk_samples(self) -> int:
        return sample_chunking(self.x, self.samples_first)

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_samples / self.chunk_samples)

    def chunk_bounds(self) -> list[tuple[int, int]]:
        """(start, stop) sample range of every chunk, in chunk order."""
        c, m = self.chunk_samples, self.n_samples
        return [(s, min(s + c, m)) for s in range(0, m, c)]

    def fingerprint(self) -> dict:
        """What identifies the data a model was trained on (recorded in model files)."""
        return {
            "url": self.url,
            "x": self.x.path,
            "y": self.y.path if self.y is not None else None,
            "sample_weight": self.s.path if self.s is not None else None,
            "layout": "samples-first" if self.samples_first else "features-first",
            "shape": [self.n_samples, self.n_features],
            "chunk_samples": self.chunk_samples,
            "dtype": str(self.x.dtype),
        }


def open_dataset(
    url: str,
    *,
    x: str = "X",
    y: str | None = "y",
    sample_weight: str | None = None,
    storage_options: dict | None = None,
) -> Dataset:
    """Open and validate a dataset; ``y=None`` opens features only (for prediction), and
    ``sample_weight`` names an optional array of per-sample weights shaped like ``y``.

    Raises :class:`DataError` naming the problem: missing group or array, wrong dtype, empty
    shape, chunking across features, X/y mismatch, or chunks missing from the store.
    """
    group = _open_group(url, storage_options)
    xa = _open_member(group, url, x)
    samples_first = check_features_array(xa, f"{url}/{x}")
    ds = Dataset(
        url,
        xa,
        _open_member(group, url, y) if y is not None else None,
        samples_first,
        _open_member(group, url, sample_weight) if sample_weight is not None else None,
    )
    for arr, name in ((ds.y, "y"), (ds.s, "sample weights")):
        if arr is not None:
            check_sample_array(arr, ds.n_samples, ds.chunk_samples, f"{url}/{arr.path}", name)
    for arr in (ds.x, ds.y, ds.s):
        if arr is not None:
            check_chunks_present(arr, url)
    return ds


def _open_group(url: str, storage_options: dict | None) -> zarr.Group:
    try:
        # storage options are for object stores; zarr refuses them with a local path
        options = None if is_local(url) else storage_options
        return zarr.open_group(url, mode="r", storage_options=options)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        raise DataError(f"no zarr group at '{url}' (expected a dlr dataset)") from None


def _open_member(group: zarr.Group, url: str, name: str) -> zarr.Array:
    try:
        node = group[name]
    except KeyError:
        have = ", ".join(sorted(group.array_keys())) or "none"
        raise DataError(f"'{url}' has no array '{name}' (arrays: {have})") from None
    if not isinstance(node, zarr.Array):
        raise DataError(f"'{url}/{name}' is a group, not an array")
    return node


def layout_of(xa: zarr.Array, where: str) -> bool:
    """True if ``xa`` is samples × features, from its ``dimension_names`` (default: True)."""
    names = tuple(getattr(xa.metadata, "dimension_names", None) or ())
    if xa.ndim != 2:
        raise DataError(not_2d_message(f"X '{where}'", xa.shape))
    if names in ((), (None, None), SAMPLES_FIRST):
        return True
    if names == FEATURES_FIRST:
        return False
    raise DataError(
        f"X '{where}' has dimension_names {names}; expected {SAMPLES_FIRST} or {FEATURES_FIRST}"
    )


def check_dtype(dtype: np.dtype, what: str, kinds: str = "iuf") -> None:
    if dtype.kind == "c":
        raise DataError(f"Complex data not supported: {what} has dtype {dtype}")
    if dtype.kind not in kinds:
        raise DataError(f"{what} has dtype {dtype}; expected real numbers (integer or float)")


def check_not_empty(m: int, n: int, what: str) -> None:
    """Samples and features must both be at least 1 (scikit-learn's wording)."""
    if m == 0:
        raise DataError(
            f"{what} has 0 sample(s) (shape=({m}, {n})) while a minimum of 1 is required."
        )
    if n == 0:
        raise DataError(
            f"{what} has 0 feature(s) (shape=({m}, {n})) while a minimum of 1 is required."
        )


def not_2d_message(what: str, shape) -> str:
    return (
        f"{what} must be 2-D (samples × features), got shape {tuple(shape)}; Reshape your data "
        "with array.reshape(-1, 1) for a single feature or array.reshape(1, -1) for a single "
        "sample"
    )


def sample_chunking(xa, samples_first: bool) -> int:
    """Samples per chunk of a 2-D zarr array (shards, when sharded, are the unit read)."""
    grid = getattr(xa, "shards", None) or xa.chunks
    return grid[0 if samples_first else 1]


def check_features_array(xa: zarr.Array, where: str) -> bool:
    """Validate a feature array (2-D, real dtype, non-empty, whole-sample chunks).

    Returns True if it is samples × features, False if features × samples.
    """
    samples_first = layout_of(xa, where)
    check_dtype(xa.dtype, f"X '{where}'")
    m, n = xa.shape if samples_first else xa.shape[::-1]
    check_not_empty(m, n, f"X '{where}'")
    grid = getattr(xa, "shards", None) or xa.chunks
    if grid[1 if samples_first else 0] < n:
        raise DataError(
            f"X '{where}' is chunked along features (chunks {grid}, shape {xa.shape}); dlr reads "
            "whole samples, so chunk along the sample axis only"
        )
    return samples_first


def check_sample_array(ya, n_samples: int, chunk_samples: int, where: str, name: str) -> None:
    """Shape, dtype and chunking of a per-sample array (``name``: "y" or "sample weights")
    against its features."""
    if ya.ndim != 1 or ya.shape[0] != n_samples:
        raise DataError(
            f"{name} '{where}' has shape {ya.shape} but X has {n_samples} samples; "
            f"expected shape ({n_samples},)"
        )
    check_dtype(ya.dtype, f"{name} '{where}'", kinds="biuf")
    grid = getattr(ya, "shards", None) or ya.chunks
    if grid[0] != chunk_samples and n_samples > min(grid[0], chunk_samples):
        raise DataError(
            f"X and {name} are chunked differently: X has {chunk_samples} samples per chunk, "
            f"'{where}' has {grid[0]}; rechunk it like X"
        )


def check_chunks_present(arr: zarr.Array, url: str) -> None:
    """Raise if a chunk of ``arr`` is missing from the store.

    zarr fills a missing chunk with the fill value on read, so a deleted chunk would silently
    become zeros. (Arrays written with ``write_empty_chunks=False`` omit all-fill chunks; dlr
    writes every chunk.)
    """
    store = arr.store_path.store
    prefix = arr.store_path.path
    prefix = f"{prefix}/" if prefix else ""

    async def keys() -> set[str]:
        return {k[len(prefix) :] async for k in store.list_prefix(prefix)}

    present = sync(keys())
    grid = getattr(arr, "shards", None) or arr.chunks
    counts = [math.ceil(s / c) for s, c in zip(arr.shape, grid, strict=True)]
    for coords in np.ndindex(*counts):
        key = arr.metadata.encode_chunk_key(tuple(int(c) for c in coords))
        if key not in present:
            raise DataError(
                f"chunk {coords} of array '{arr.path}' in '{url}' is missing from the store "
                f"(key '{prefix}{key}'); zarr would read it as fill values, so dlr refuses it"
            )


def read_block(
    arr: zarr.Array,
    samples_first: bool,
    start: int,
    stop: int,
    origin: str,
    chunk: int,
    reuse: bool = False,
):
    """Read samples [start, stop) (chunk ``chunk``) of a 1-D or 2-D array of the dataset
    ``origin``, naming the chunk if it fails to decode.

    Arrays stored as dlr writes them are read directly (see :func:`_read_direct`); with
    ``reuse``, into a buffer of this thread that the next read overwrites — for a caller that
    is done with the data before its next read, as a streamed chunk's task is.
    """
    try:
        if _direct(arr) and start == chunk * arr.chunks[0 if samples_first else -1]:
            full = _read_direct(arr, chunk, samples_first, reuse)
            if full is None:
                raise DataError(
                    f"chunk {chunk} of array '{arr.path}' in {origin} is missing from the store"
                )
            rows = stop - start
            return full[:rows] if arr.ndim == 1 or samples_first else full[:, :rows]
        if arr.ndim == 1 or samples_first:
            return arr[start:stop]
        return arr[:, start:stop]
    except DataError:
        raise
    except Exception as e:  # zarr raises bare ValueError/RuntimeError for corrupt chunks
        raise DataError(
            f"could not read chunk {chunk} of array '{arr.path}' in {origin} (samples "
            f"{start}–{stop - 1}): the chunk is corrupt or unreadable ({e})"
        ) from e


def _direct(arr: zarr.Array) -> bool:
    """Whether ``arr`` is stored exactly as :func:`codecs` writes it, unsharded and in this
    machine's byte order: then its chunks can be decoded without zarr's general machinery."""
    compressors = arr.compressors
    return (
        getattr(arr, "shards", None) is None
        and not arr.filters
        and isinstance(arr.serializer, BytesCodec)
        and len(compressors) == 2
        and isinstance(compressors[0], BloscCodec)
        and isinstance(compressors[1], Crc32cCodec)
        and arr.dtype.isnative
        and sys.byteorder == "little"
    )


_buffers = threading.local()


def _read_direct(arr: zarr.Array, chunk: int, samples_first: bool, reuse: bool):
    """Chunk ``chunk`` of ``arr`` (whole, padded as stored), or None if it is missing.

    The stored bytes are blosc's frame followed by the crc32c of that frame (zarr's Crc32cCodec);
    the checksum is verified, then blosc decodes straight into the result. This skips zarr's
    per-read buffer allocations and copies: half the time of ``arr[...]`` and about a third of
    its peak memory for a streamed chunk.
    """
    coords = (chunk,) if arr.ndim == 1 else ((chunk, 0) if samples_first else (0, chunk))
    key = arr.metadata.encode_chunk_key(coords)
    if arr.store_path.path:
        key = f"{arr.store_path.path}/{key}"
    raw = _stored_bytes(arr.store_path.store, key)
    if raw is None:
        return None
    frame = raw[:-4]
    if crc32c.crc32c(frame) != int.from_bytes(raw[-4:].tobytes(), "little"):
        raise ValueError("stored and computed crc32c checksums differ")
    shape = arr.chunks
    if reuse:
        out = per_thread(
            f"chunk of {arr.path}", (shape, arr.dtype.str), lambda: np.empty(shape, arr.dtype)
        )
    else:
        out = small_page_empty(shape, arr.dtype)
    blosc.decompress(frame, out)
    return out


def _stored_bytes(store, key: str) -> np.ndarray | None:
    """The bytes stored under ``key`` (uint8), or None if absent. From a local store they are
    read into a buffer of this thread, grown as needed, that the thread's next read overwrites
    (the caller decodes them at once): reading allocates nothing, which keeps the allocator from
    holding on to freed chunk-sized blocks and spares fresh pages their first-touch faults."""
    if isinstance(store, LocalStore):
        path = os.path.join(str(store.root), key)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                cache = getattr(_buffers, "stored", None)
                if cache is None or cache.size < size:  # grown, with headroom, never shrunk
                    cache = _buffers.stored = np.empty(size + size // 8 + 64, dtype=np.uint8)
                raw = cache[:size]
                if f.readinto(memoryview(raw)) != size:
                    raise ValueError(f"short read of '{path}'")
                return raw
        except FileNotFoundError:
            return None
    buffer = sync(store.get(key, prototype=default_buffer_prototype()))
    return None if buffer is None else buffer.as_numpy_array()


def codecs() -> dict:
    """How dlr stores chunks: little-endian bytes, blosc-lz4 with byte shuffle (fast to decode),
    and a crc32c checksum so a corrupt chunk fails loudly instead of decoding to garbage."""
    return {
        "serializer": BytesCodec(),
        "compressors": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec()],
        "config": {"write_empty_chunks": True},
    }


def create_arrays(
    group: zarr.Group,
    n_samples: int,
    n_features: int,
    chunk_samples: int,
    *,
    samples_first: bool = True,
    dtype="float32",
    x: str = "X",
    y: str = "y",
) -> tuple[zarr.Array, zarr.Array]:
    """Create empty feature and label arrays in the dlr format inside ``group``."""
    shape = (n_samples, n_features) if samples_first else (n_features, n_samples)
    chunks = (chunk_samples, n_features) if samples_first else (n_features, chunk_samples)
    xa = group.create_array(
        x,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        dimension_names=SAMPLES_FIRST if samples_first else FEATURES_FIRST,
        **codecs(),
    )
    ya = group.create_array(
        y,
        shape=(n_samples,),
        chunks=(chunk_samples,),
        dtype="uint8",
        dimension_names=("sample",),
        **codecs(),
    )
    return xa, ya


def describe(ds: Dataset) -> str:
    """A few human-readable lines about a dataset (``dlr info``)."""
    layout = "samples-first" if ds.samples_first else "features-first"
    bounds = ds.chunk_bounds()
    last = bounds[-1][1] - bounds[-1][0]
    lines = [
        f"dataset   {ds.url}",
        f"X         '{ds.x.path}' {ds.x.dtype}, {layout} {ds.x.shape}: "
        f"{ds.n_samples} samples × {ds.n_features} features",
        f"y         '{ds.y.path}' {ds.y.dtype} ({ds.y.shape[0]},)"
        if ds.y is not None
        else "y         none",
        f"chunks    {ds.n_chunks} of {ds.chunk_samples} samples"
        + (f" (last {last})" if last != ds.chunk_samples else ""),
        "codecs    " + ", ".join(_codec_name(c) for c in (ds.x.serializer, *ds.x.compressors)),
        f"decoded   {ds.n_samples * ds.n_features * ds.x.dtype.itemsize / 1e6:.1f} MB of features",
    ]
    meta = dict(zarr.open_group(ds.x.store_path.store, mode="r").attrs).get("dlr", {})
    if "true_coef" in meta:
        lines.append(
            f"generator {meta.get('generator')} (seed {meta.get('seed')}), "
            "true weights in the group attributes"
        )
    return "\n".join(lines)


def _codec_name(codec) -> str:
    name = type(codec).__name__.removesuffix("Codec").lower()
    cname = getattr(codec, "cname", None)
    return f"{name}-{getattr(cname, 'value', cname)}" if cname else name
