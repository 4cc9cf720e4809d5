"""Writing whole chunks of a zarr array of a local store: dlr's direct chunk writer, for arrays
stored as dlr stores its own.

zarr writes a chunk on its event-loop thread, in Python, and its crc32c codec checksums and
copies the whole chunk holding the GIL: beside other work of the same process (ingest's reading,
hashing and summaries) that is time in which none of it can run. The direct writer does what
zarr's codec pipeline does — the chunk's little-endian bytes, blosc (the same numcodecs call),
their crc32c appended — on the calling thread with the GIL released, and writes the chunk's
file itself. It exists only for arrays it was checked to write byte for byte as zarr does
(:func:`direct_writer`): so what zarr reads back is what it would have read.
"""

import functools
import os
import sys

import crc32c
import numpy as np
import zarr
from numcodecs import Blosc
from zarr.storage import MemoryStore

#: Bytes of the probe chunk each codec configuration is checked on (several of blosc's blocks).
_PROBE_BYTES = 1 << 18


class ChunkWriter:
    """Writes whole chunks of one array into its directory of a local store, as zarr writes
    them: blosc-compressed little-endian bytes followed by their crc32c."""

    def __init__(self, arr: zarr.Array, directory: str, blosc: Blosc):
        self.arr, self.directory, self.blosc = arr, directory, blosc

    def write(self, index: int, block: np.ndarray) -> str:
        """Write ``block`` — the whole chunk ``index`` along the first axis, of the chunk's
        shape and the array's dtype — and return the path of its file."""
        chunk = self.arr.chunks
        if block.shape != chunk or block.dtype != self.arr.dtype:
            raise ValueError(
                f"a chunk of {chunk} {self.arr.dtype}, got {block.shape} {block.dtype}"
            )
        path = chunk_path(self.arr, self.directory, index)
        _write_file(path, _encoded(self.blosc, block))
        return path


def chunk_path(arr: zarr.Array, directory: str, index: int) -> str:
    """The file of chunk ``index`` along the first axis of ``arr``, stored in ``directory``
    (chunks spanning the other axes)."""
    return os.path.join(directory, arr.metadata.encode_chunk_key((index,) + (0,) * (arr.ndim - 1)))


def direct_writer(arr: zarr.Array, directory: str | None) -> ChunkWriter | None:
    """The direct writer of ``arr`` in ``directory`` (its directory in a local store; None for
    any other store), or None where it would not write zarr's bytes.

    Claimed: zarr v3 arrays, unsharded, whose chunks span every axis but the first, of a
    bool, integer or float dtype, with zarr's little-endian bytes serializer and exactly blosc
    then crc32c, that store every chunk (``write_empty_chunks``; all as
    :func:`dlr.dataset.codecs` makes them), on a little-endian machine; and
    then only if a probe chunk written by zarr and by the writer is the same bytes (which
    checks how this zarr calls numcodecs, e.g. the typesize it gives blosc).
    """
    meta = arr.metadata
    if directory is None or meta.zarr_format != 3 or sys.byteorder != "little":
        return None
    dtype = np.dtype(arr.dtype)
    if dtype.kind not in "biuf" or getattr(arr, "shards", None) is not None:
        return None
    if tuple(arr.chunks[1:]) != tuple(arr.shape[1:]) or arr.filters:
        return None
    if not arr.config.write_empty_chunks:
        return None  # zarr would not store a chunk of fill values at all
    serializer = arr.serializer
    endian = getattr(getattr(serializer, "endian", None), "value", None)
    if type(serializer).__name__ != "BytesCodec" or (dtype.itemsize > 1 and endian != "little"):
        return None
    if [type(c).__name__ for c in arr.compressors] != ["BloscCodec", "Crc32cCodec"]:
        return None
    b = arr.compressors[0]
    config = (
        dtype.str,
        tuple(arr.chunks[1:]),
        b.cname.value,
        b.clevel,
        {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[b.shuffle.value],
        b.typesize,
        b.blocksize,
    )
    blosc = _checked_blosc(config)
    return None if blosc is None else ChunkWriter(arr, directory, blosc)


@functools.cache
def _checked_blosc(config: tuple) -> Blosc | None:
    """The numcodecs blosc compressor of ``config`` (dtype, trailing chunk shape, cname,
    clevel, shuffle, typesize, blocksize) if, with it, a probe chunk encodes to the bytes zarr
    stores for it; else None."""
    dtype, trailing, cname, clevel, shuffle, typesize, blocksize = config
    blosc = Blosc(
        cname=cname, clevel=clevel, shuffle=shuffle, blocksize=blocksize, typesize=typesize
    )
    row = int(np.prod(trailing, dtype=np.int64)) * np.dtype(dtype).itemsize
    shape = (max(1, _PROBE_BYTES // row), *trailing)
    # bytes of few values: blosc's shuffle and compression both have work to do
    probe = np.random.default_rng(0).integers(0, 16, shape[0] * row, dtype=np.uint8)
    probe = probe.view(dtype).reshape(shape)
    stored: dict = {}
    arr = zarr.create_array(
        store=MemoryStore(stored),
        shape=shape,
        chunks=shape,
        dtype=dtype,
        serializer=zarr.codecs.BytesCodec(endian="little"),
        compressors=[
            zarr.codecs.BloscCodec(
                cname=cname,
                clevel=clevel,
                shuffle=("noshuffle", "shuffle", "bitshuffle")[shuffle],
                typesize=typesize,
                blocksize=blocksize,
            ),
            zarr.codecs.Crc32cCodec(),
        ],
    )
    arr[...] = probe
    key = arr.metadata.encode_chunk_key((0,) * len(shape))
    ours = b"".join(bytes(part) for part in _encoded(blosc, probe))
    return blosc if stored[key].to_bytes() == ours else None


def _encoded(blosc: Blosc, block: np.ndarray) -> list:
    """The stored form of chunk ``block``: its compressed bytes and their crc32c (4 bytes,
    little-endian); both numcodecs and crc32c release the GIL."""
    raw = np.ascontiguousarray(block).reshape(-1).view(np.uint8)
    data = blosc.encode(raw)
    return [data, crc32c.crc32c(data).to_bytes(4, "little")]


def _write_file(path: str, parts: list) -> None:
    """Create (or replace) the file at ``path`` holding ``parts`` one after the other."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        views = [memoryview(p).cast("B") for p in parts]
        while views:
            written = os.writev(fd, views)
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if views:
                views[0] = views[0][written:]
    finally:
        os.close(fd)
