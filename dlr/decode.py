"""Reading a sample range of a zarr array: dlr's direct chunk decoder, or zarr's own read.

The direct decoder reads a chunk's stored bytes, verifies its crc32c, and decompresses straight
into a reusable per-thread buffer (streamed chunks) or a fresh small-page array (cached chunks),
skipping zarr's per-read allocations and copies. It is used only for arrays whose chunks it
decodes to exactly the values zarr reads (see :func:`direct_decoder`); any other array — other
codecs or filters, nested sharding, Fortran order, non-numeric data — is read through zarr.

An absent chunk reads as the array's fill value, as zarr defines it, unless the array records
that every chunk is stored (dlr's own arrays): then it is an error naming the chunk.
"""

import os
import sys
import zlib
from dataclasses import dataclass

import crc32c
import numpy as np
import zarr
from numcodecs import blosc
from numcodecs import zstd as numcodecs_zstd
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

from dlr.cf import Packing, unpack
from dlr.errors import DataError
from dlr.memory import per_thread_array, small_page_empty

#: Compressors the direct decoder claims, by the name zarr v3 (codec class) or v2 (codec id)
#: gives them.
_COMPRESSORS = {
    "BloscCodec": "blosc",
    "ZstdCodec": "zstd",
    "GzipCodec": "gzip",
    "blosc": "blosc",
    "zstd": "zstd",
    "gzip": "gzip",
}


@dataclass(frozen=True)
class DirectDecoder:
    """How to decode one array's chunks without zarr.

    ``compressor`` is "blosc", "zstd", "gzip" or None (raw bytes); ``crc32c`` whether a
    checksum of the compressed bytes follows them; ``swap`` whether the stored bytes are in the
    other byte order than this machine's. ``chunk_shape`` is the stored (padded) chunk shape and
    ``dtype`` the native dtype values are returned in. ``fill`` is what an absent chunk reads
    as, or None if every chunk must be stored.
    """

    compressor: str | None
    crc32c: bool
    swap: bool
    chunk_shape: tuple
    dtype: np.dtype
    fill: object
    shard: "ShardLayout | None" = None


@dataclass(frozen=True)
class ShardLayout:
    """A sharded array's shards (zarr v3's sharding codec): ``shape`` of a shard; its index of
    (offset, size) per inner chunk, in C order, at the end or the start, followed by its crc32c
    if ``crc32c``."""

    shape: tuple
    index_at_end: bool
    crc32c: bool

    def grid(self, chunk_shape: tuple) -> tuple:
        return tuple(s // c for s, c in zip(self.shape, chunk_shape, strict=True))


def stored_dims(arr: zarr.Array) -> tuple:
    """The array's dimension names: ``dimension_names`` (zarr v3) or xarray's
    ``_ARRAY_DIMENSIONS`` attribute (zarr v2); () when it has none."""
    if arr.metadata.zarr_format == 3:
        names = arr.metadata.dimension_names
    else:
        names = arr.attrs.get("_ARRAY_DIMENSIONS")
    return tuple(names) if names else ()


def direct_decoder(arr: zarr.Array, all_stored: bool) -> DirectDecoder | None:
    """The direct decoder of ``arr``, or None where it would not give exactly zarr's values.

    Claimed: zarr v2 and v3, unsharded or sharded once (see :func:`_shard_layout`), no filters
    (v2) or array-to-array codecs (v3), C order (v2, 2-D), bool/integer/float dtypes in either
    byte order, stored as raw bytes or with one of blosc (any inner compressor), zstd or gzip,
    in v3 optionally followed by crc32c. The fill value is zarr's: the array's, or 0 for a v2
    array without one.
    """
    dtype = np.dtype(arr.dtype)
    if dtype.kind not in "biuf":
        return None
    meta = arr.metadata
    shard = None
    if getattr(arr, "shards", None) is not None:
        shard = _shard_layout(arr)
        if shard is None:
            return None
    if meta.zarr_format == 3:
        serializer = arr.serializer
        if arr.filters or type(serializer).__name__ != "BytesCodec":
            return None
        endian = getattr(serializer.endian, "value", serializer.endian)
        swap = dtype.itemsize > 1 and endian != sys.byteorder
        codecs = [type(c).__name__ for c in arr.compressors]
        checked = codecs[-1:] == ["Crc32cCodec"]
        codecs = codecs[:-1] if checked else codecs
    else:
        if arr.filters or (arr.ndim > 1 and meta.order != "C"):
            return None
        swap = not dtype.isnative and dtype.itemsize > 1
        codecs = [c.codec_id for c in arr.compressors]
        checked = False
    if len(codecs) > 1 or (codecs and codecs[0] not in _COMPRESSORS):
        return None
    fill = None
    if not all_stored:
        fill = 0 if arr.fill_value is None else arr.fill_value
    return DirectDecoder(
        _COMPRESSORS[codecs[0]] if codecs else None,
        checked,
        swap,
        tuple(arr.chunks),
        dtype.newbyteorder("="),
        fill,
        shard,
    )


def _shard_layout(arr: zarr.Array) -> ShardLayout | None:
    """The layout of ``arr``'s shards, if the direct decoder claims it: one level of sharding
    (inner chunks that are not sharded again: checked by the caller), an index in little-endian
    bytes with or without crc32c."""
    sharding = arr.metadata.codecs[0]
    if type(sharding).__name__ != "ShardingCodec":
        return None  # array-to-array codecs before the sharding
    index = [type(c).__name__ for c in sharding.index_codecs]
    endian = getattr(sharding.index_codecs[0], "endian", None)
    if index not in (["BytesCodec"], ["BytesCodec", "Crc32cCodec"]):
        return None
    if getattr(endian, "value", endian) != "little" or sys.byteorder != "little":
        return None
    location = getattr(sharding.index_location, "value", sharding.index_location)
    return ShardLayout(tuple(arr.shards), location == "end", len(index) == 2)


def read_block(
    arr: zarr.Array,
    samples_first: bool,
    start: int,
    stop: int,
    origin: str,
    chunk: int,
    reuse: bool = False,
    decoder: DirectDecoder | None = None,
    packing: Packing | None = None,
) -> np.ndarray:
    """Samples [start, stop) — chunk ``chunk`` of the dataset ``origin`` — of a 1-D or 2-D
    array, in native byte order, naming the chunk if it cannot be read.

    With a ``decoder`` (see :func:`direct_decoder`) the chunks holding the range are decoded
    directly; with ``reuse``, a range inside one stored chunk comes back as a view of a buffer
    of this thread that the next read overwrites — for a caller done with the data before its
    next read, as a streamed chunk's task is. Without one, zarr reads it. A ``packing`` (see
    :func:`dlr.cf.packing_of`) then decodes the raw values as xarray does.
    """
    raw = _read_raw(arr, samples_first, start, stop, origin, chunk, reuse, decoder)
    if packing is None:
        return raw
    where = f"{origin}, chunk {chunk} (samples {start}–{stop - 1})"
    return unpack(raw, packing, arr, samples_first, where, start, reuse)


def _read_raw(arr, samples_first, start, stop, origin, chunk, reuse, decoder) -> np.ndarray:
    try:
        if decoder is not None:
            return _read_direct(arr, decoder, samples_first, start, stop, reuse)
        out = arr[start:stop] if arr.ndim == 1 or samples_first else arr[:, start:stop]
        return out.astype(out.dtype.newbyteorder("="), copy=False)
    except MissingChunk as e:
        raise DataError(
            f"chunk {e.coords} of array '{arr.path}' in {origin} is missing from the store "
            f"(key '{e.key}'); the array records that every chunk is stored"
        ) from None
    except Exception as e:  # zarr and the codecs raise bare ValueError/RuntimeError
        raise DataError(
            f"could not read chunk {chunk} of array '{arr.path}' in {origin} (samples "
            f"{start}–{stop - 1}): the chunk is corrupt or unreadable ({e})"
        ) from e


class MissingChunk(Exception):
    def __init__(self, coords: tuple, key: str):
        super().__init__(key)
        self.coords, self.key = coords, key


def _read_direct(arr, decoder: DirectDecoder, samples_first, start, stop, reuse) -> np.ndarray:
    """Samples [start, stop) decoded block by block — a block: the chunks holding one chunk's
    worth of samples, across all features —, as a view of the one block holding them or their
    pieces of several blocks copied into one array."""
    axis = 0 if arr.ndim == 1 or samples_first else 1
    size = (decoder.shard.shape if decoder.shard else decoder.chunk_shape)[axis]
    first, last = start // size, (stop - 1) // size

    def take(block, lo, hi):
        """Samples lo..hi of a block, and only the array's features (not a chunk's padding)."""
        if arr.ndim == 1:
            return block[lo:hi]
        n = arr.shape[1 - axis]
        return block[lo:hi, :n] if axis == 0 else block[:n, lo:hi]

    name = f"block of {arr.path}"
    if first == last:
        lo = start - first * size
        whole = lo == 0 and stop - start == min(size, arr.shape[axis] - start)
        if reuse or whole:
            return take(
                _decode_block(arr, decoder, first, axis, name, reuse), lo, lo + stop - start
            )
    shape = list(arr.shape)
    shape[axis] = stop - start
    out = _new(tuple(shape), decoder.dtype, f"range of {arr.path}", reuse)
    for b in range(first, last + 1):
        block = _decode_block(arr, decoder, b, axis, name, reuse=True)
        lo, hi = max(start, b * size), min(stop, (b + 1) * size)
        at = slice(lo - start, hi - start)
        out[at if axis == 0 else (slice(None), at)] = take(block, lo - b * size, hi - b * size)
    return out


def _new(shape, dtype, name: str, reuse: bool) -> np.ndarray:
    if reuse:
        return per_thread_array(name, shape, dtype)
    return small_page_empty(shape, dtype)


def _decode_block(arr, decoder: DirectDecoder, b: int, axis: int, name: str, reuse: bool):
    """Block ``b`` along the sample ``axis``: its one chunk, decoded into a buffer of the chunk's
    shape, or — an array chunked along features too — its chunks copied side by side into a
    buffer of the chunk's samples × the array's features."""
    if decoder.shard is not None:
        return _decode_sharded_block(arr, decoder, b, axis, name, reuse)
    shape = decoder.chunk_shape
    if arr.ndim == 1:
        return _decode_chunk(arr, decoder, (b,), _new(shape, decoder.dtype, name, reuse))
    other = 1 - axis
    n, width = arr.shape[other], shape[other]
    if width >= n:
        coords = (b, 0) if axis == 0 else (0, b)
        return _decode_chunk(arr, decoder, coords, _new(shape, decoder.dtype, name, reuse))
    block_shape = (shape[0], n) if axis == 0 else (n, shape[1])
    out = _new(block_shape, decoder.dtype, name, reuse)
    scratch = _new(shape, decoder.dtype, f"chunk of {arr.path}", True)
    for j in range(-(-n // width)):
        piece = _decode_chunk(arr, decoder, (b, j) if axis == 0 else (j, b), scratch)
        cols = slice(j * width, min(n, (j + 1) * width))
        k = cols.stop - cols.start
        if axis == 0:
            out[:, cols] = piece[:, :k]
        else:
            out[cols] = piece[:k]
    return out


def _decode_chunk(arr, decoder: DirectDecoder, coords: tuple, out: np.ndarray):
    """Decode the chunk at ``coords`` of ``arr`` into ``out`` (the stored chunk shape, native
    dtype) and return it: the fill value if the chunk is absent."""
    key = arr.metadata.encode_chunk_key(coords)
    if arr.store_path.path:
        key = f"{arr.store_path.path}/{key}"
    raw = _stored_bytes(arr.store_path.store, key)
    if raw is None:
        if decoder.fill is None:
            raise MissingChunk(coords, key)
        out[...] = decoder.fill
        return out
    return _decode_bytes(decoder, raw, out)


def _decode_sharded_block(arr, decoder: DirectDecoder, b: int, axis: int, name: str, reuse):
    """Block ``b`` of a sharded array: the shards holding its samples, across all features,
    their inner chunks decoded one by one and copied into place (absent ones: the fill)."""
    shard, inner = decoder.shard, decoder.chunk_shape
    if arr.ndim == 1:
        block_shape, n_across = shard.shape, 1
    else:
        other = 1 - axis
        n = arr.shape[other]
        block_shape = (shard.shape[0], n) if axis == 0 else (n, shard.shape[1])
        n_across = -(-n // shard.shape[other])
    out = _new(block_shape, decoder.dtype, name, reuse)
    scratch = _new(inner, decoder.dtype, f"chunk of {arr.path}", True)
    grid = shard.grid(inner)
    for j in range(n_across):
        coords = (b,) if arr.ndim == 1 else ((b, j) if axis == 0 else (j, b))
        key = arr.metadata.encode_chunk_key(coords)
        if arr.store_path.path:
            key = f"{arr.store_path.path}/{key}"
        raw = _stored_bytes(arr.store_path.store, key)
        if raw is None and decoder.fill is None:
            raise MissingChunk(coords, key)
        index = None if raw is None else _shard_index(raw, shard, grid)
        for at in np.ndindex(*grid):
            start = [a * c for a, c in zip(at, inner, strict=True)]
            if arr.ndim == 2:
                start[1 - axis] += j * shard.shape[1 - axis]
            region = tuple(
                slice(lo, min(lo + c, end))
                for lo, c, end in zip(start, inner, block_shape, strict=True)
            )
            if any(r.start >= r.stop for r in region):
                continue  # an inner chunk past the array's last feature
            offset, size = (_EMPTY, 0) if index is None else (int(v) for v in index[at])
            if offset == _EMPTY:
                if decoder.fill is None:
                    raise MissingChunk(coords, f"{key}, inner chunk {at}")
                out[region] = decoder.fill
                continue
            if offset + size > raw.size:
                raise ValueError(f"shard index points past the shard's {raw.size} bytes")
            piece = _decode_bytes(decoder, raw[offset : offset + size], scratch)
            out[region] = piece[tuple(slice(0, r.stop - r.start) for r in region)]
    return out


#: A shard index entry of an inner chunk that is not stored.
_EMPTY = 2**64 - 1


def _shard_index(raw: np.ndarray, shard: ShardLayout, grid: tuple) -> np.ndarray:
    """The (offset, size) uint64 pairs, shaped ``grid`` + (2,), of a shard's inner chunks."""
    size = 16 * int(np.prod(grid)) + (4 if shard.crc32c else 0)
    if raw.size < size:
        raise ValueError(f"shard of {raw.size} bytes is shorter than its index ({size} bytes)")
    index = raw[raw.size - size :] if shard.index_at_end else raw[:size]
    if shard.crc32c:
        index, stored = index[:-4], int.from_bytes(index[-4:].tobytes(), "little")
        if crc32c.crc32c(index) != stored:
            raise ValueError("stored and computed crc32c checksums of the shard index differ")
    return np.frombuffer(index.tobytes(), dtype="<u8").reshape(*grid, 2)


def _decode_bytes(decoder: DirectDecoder, raw: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Decode one chunk's stored bytes ``raw`` (uint8) into ``out`` and return it."""
    if decoder.crc32c:
        raw, stored = raw[:-4], int.from_bytes(raw[-4:].tobytes(), "little")
        if crc32c.crc32c(raw) != stored:
            raise ValueError("stored and computed crc32c checksums differ")
    flat = out.reshape(-1).view(np.uint8)
    if decoder.compressor == "blosc":
        _check_size(int.from_bytes(raw[4:8].tobytes(), "little"), flat.size)  # header: nbytes
        blosc.decompress(raw, out)
    elif decoder.compressor == "zstd":
        n = _zstd_content_size(raw)
        if n is None:  # a frame that does not say its size: decode, then copy
            data = numcodecs_zstd.decompress(raw)
            _check_size(len(data), flat.size)
            flat[...] = np.frombuffer(data, dtype=np.uint8)
        else:
            _check_size(n, flat.size)
            numcodecs_zstd.decompress(raw, out)
    elif decoder.compressor == "gzip":
        data = zlib.decompress(raw, wbits=31)
        _check_size(len(data), flat.size)
        flat[...] = np.frombuffer(data, dtype=np.uint8)
    else:
        _check_size(raw.size, flat.size)
        flat[...] = raw
    if decoder.swap:
        out.byteswap(inplace=True)
    return out


def _zstd_content_size(frame: np.ndarray) -> int | None:
    """The decompressed size a zstd frame's header states, or None if it states none (RFC 8878
    section 3.1.1.1: magic number, frame header descriptor, window, dictionary id, content
    size)."""
    if frame.size < 6 or int.from_bytes(frame[:4].tobytes(), "little") != 0xFD2FB528:
        return None
    descriptor = int(frame[4])
    fcs_flag, single_segment, dict_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if size == 0:
        return None
    at = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    if frame.size < at + size:
        return None
    value = int.from_bytes(frame[at : at + size].tobytes(), "little")
    return value + 256 if size == 2 else value


def _check_size(got: int, expected: int) -> None:
    if got != expected:
        raise ValueError(f"chunk decodes to {got} bytes, expected {expected}")


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
                raw = per_thread_array("stored bytes", (size,), np.uint8, headroom=True)
                if f.readinto(memoryview(raw)) != size:
                    raise ValueError(f"short read of '{path}'")
                return raw
        except FileNotFoundError:
            return None
    buffer = sync(store.get(key, prototype=default_buffer_prototype()))
    return None if buffer is None else buffer.as_numpy_array()
