"""Reading chunks: dlr's direct decoder gives exactly zarr's values wherever it claims an array,
and every other array is read through zarr.

Each claimed combination — codec (with or without crc32c) × byte order × dtype × zarr format ×
layout × absent chunks — is written by zarr itself and read back both ways, bit for bit, over
each stored chunk and over sample ranges spanning chunks (as labels chunked apart from X are
read).
"""

from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import (
    BloscCodec,
    BytesCodec,
    Crc32cCodec,
    GzipCodec,
    ShardingCodec,
    TransposeCodec,
    ZstdCodec,
)

from dlr.dataset import FEATURES_FIRST, SAMPLES_FIRST, layout_of, open_dataset
from dlr.decode import direct_decoder, read_block

N_SAMPLES, N_FEATURES, CHUNK = 47, 3, 10  # 5 chunks, the last one ragged
DTYPES = ["float32", "float64", "uint8"]
LAYOUTS = ["samples-first", "features-first", "1-D"]

V3_COMPRESSORS = {  # crc32c checks the compressed bytes, whatever compressed them
    "raw": [],
    "raw+crc32c": [Crc32cCodec()],
    "blosc-lz4+crc32c": [BloscCodec(cname="lz4", shuffle="shuffle"), Crc32cCodec()],
    "blosc-zstd": [BloscCodec(cname="zstd", shuffle="bitshuffle")],
    "zstd": [ZstdCodec()],
    "zstd-checksum+crc32c": [ZstdCodec(level=3, checksum=True), Crc32cCodec()],
    "gzip": [GzipCodec()],
}
V2_COMPRESSORS = {
    "raw": None,
    "blosc-lz4": numcodecs.Blosc(cname="lz4", shuffle=numcodecs.Blosc.SHUFFLE),
    "blosc-zstd": numcodecs.Blosc(cname="zstd", shuffle=numcodecs.Blosc.NOSHUFFLE),
    "zstd": numcodecs.Zstd(),
    "gzip": numcodecs.GZip(),
}


def values(layout: str, dtype: str, absent: bool) -> np.ndarray:
    """Distinct non-zero values; with ``absent``, chunk 1 is all zeros (the fill value)."""
    shape = (N_SAMPLES,) if layout == "1-D" else (N_SAMPLES, N_FEATURES)
    v = (np.arange(1, np.prod(shape) + 1) % 97 + 1).reshape(shape).astype(dtype)
    if np.dtype(dtype).kind == "f":
        v = v * np.asarray(-1.25, dtype=dtype)
    if absent:
        v[CHUNK : 2 * CHUNK] = 0
    return v if layout != "features-first" else np.ascontiguousarray(v.T)


def write(path, data, layout, *, zarr_format=3, features_per_chunk=N_FEATURES, **codec_options):
    chunks = (CHUNK,) if data.ndim == 1 else (CHUNK, features_per_chunk)
    if layout == "features-first":
        chunks = chunks[::-1]
    chunks = codec_options.pop("chunks", chunks)
    names = {"samples-first": SAMPLES_FIRST, "features-first": FEATURES_FIRST}.get(layout)
    if zarr_format == 2:
        extra = {"attributes": {"_ARRAY_DIMENSIONS": list(names)}} if names else {}
    else:
        extra = {"dimension_names": names} if names else {}
    arr = zarr.create_array(
        str(path),
        shape=data.shape,
        chunks=chunks,
        dtype=data.dtype,
        zarr_format=zarr_format,
        **extra,
        **codec_options,
    )
    arr[...] = data
    return arr


def assert_reads_equal_zarrs(arr, samples_first, decoder):
    """read_block equals zarr's own read, bit for bit, in native byte order: for every chunk
    (fresh and reused buffers) and for ranges across chunk boundaries."""
    m = arr.shape[0 if arr.ndim == 1 or samples_first else 1]
    ranges = [(s, min(s + CHUNK, m)) for s in range(0, m, CHUNK)]
    ranges += [(3, 8), (5, 27), (0, m), (m - 1, m)]
    full = arr[...]
    full = full.astype(full.dtype.newbyteorder("="))
    for i, (start, stop) in enumerate(ranges):
        expected = full[start:stop] if arr.ndim == 1 or samples_first else full[:, start:stop]
        for reuse in (False, True):
            got = read_block(arr, samples_first, start, stop, "d", i, reuse, decoder)
            assert got.dtype == expected.dtype and got.shape == expected.shape
            assert got.tobytes() == expected.tobytes(), (start, stop, reuse)


def chunk_1_stored(arr, layout) -> bool:
    coords = {"samples-first": (1, 0), "features-first": (0, 1), "1-D": (1,)}[layout]
    return arr.metadata.encode_chunk_key(coords) in chunk_files(arr)


def chunk_files(arr) -> set:
    root = arr.store_path.store.root
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("absent", [False, True], ids=["all-stored", "chunk-1-absent"])
@pytest.mark.parametrize("endian", ["little", "big"])
@pytest.mark.parametrize("codec", list(V3_COMPRESSORS))
def test_direct_reads_equal_zarrs_own_reads_on_zarr_v3(tmp_path, codec, endian, absent):
    for dtype in DTYPES:
        for layout in LAYOUTS:
            data = values(layout, dtype, absent)
            arr = write(
                tmp_path / f"{dtype}-{layout}.zarr",
                data,
                layout,
                zarr_format=3,
                serializer=BytesCodec(endian=endian),
                compressors=V3_COMPRESSORS[codec],
            )
            assert chunk_1_stored(arr, layout) != absent
            decoder = direct_decoder(arr, all_stored=False)
            assert decoder is not None
            assert_reads_equal_zarrs(arr, layout != "features-first", decoder)


@pytest.mark.parametrize("absent", [False, True], ids=["all-stored", "chunk-1-absent"])
@pytest.mark.parametrize("byteorder", ["<", ">"], ids=["little", "big"])
@pytest.mark.parametrize("codec", list(V2_COMPRESSORS))
def test_direct_reads_equal_zarrs_own_reads_on_zarr_v2(tmp_path, codec, byteorder, absent):
    for dtype in DTYPES:
        for layout in LAYOUTS:
            data = values(layout, dtype, absent).astype(np.dtype(dtype).newbyteorder(byteorder))
            arr = write(
                tmp_path / f"{dtype}-{layout}.zarr",
                data,
                layout,
                zarr_format=2,
                compressors=V2_COMPRESSORS[codec],
            )
            assert chunk_1_stored(arr, layout) != absent
            decoder = direct_decoder(arr, all_stored=False)
            assert decoder is not None
            assert_reads_equal_zarrs(arr, layout != "features-first", decoder)


def test_an_absent_chunk_reads_as_the_arrays_own_fill_value(tmp_path):
    data = np.full(N_SAMPLES, 7.5)
    data[:CHUNK] = 1.0
    arr = write(tmp_path / "f.zarr", data, "1-D", zarr_format=3, fill_value=7.5)
    assert chunk_files(arr) == {"zarr.json", "c/0"}
    assert_reads_equal_zarrs(arr, True, direct_decoder(arr, all_stored=False))


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("layout", ["samples-first", "features-first"])
@pytest.mark.parametrize(
    "features_per_chunk", [2, 8], ids=["chunked-along-features", "chunks-wider-than-the-array"]
)
def test_arrays_chunked_along_features_too_are_read_directly(
    tmp_path, features_per_chunk, layout, zarr_format
):
    """Chunk (1, 0) — samples 10–19, features 0–1 — is all zeros, so absent; (1, 1) is not."""
    data = values("samples-first", "float32", absent=False)
    data[CHUNK : 2 * CHUNK, :2] = 0
    if layout == "features-first":
        data = np.ascontiguousarray(data.T)
    arr = write(
        tmp_path / "x.zarr",
        data,
        layout,
        zarr_format=zarr_format,
        features_per_chunk=features_per_chunk,
    )
    decoder = direct_decoder(arr, all_stored=False)
    assert decoder is not None
    assert_reads_equal_zarrs(arr, layout == "samples-first", decoder)


SHARDINGS = {  # shards of 2 × 2 inner chunks of 10 samples × 2 features
    "index-at-end": {},
    "index-at-start": dict(index_location="start"),
    "index-without-crc32c": dict(index_codecs=[BytesCodec()]),
}


@pytest.mark.parametrize("absent", ["all-stored", "inner-chunk-absent", "shard-absent"])
@pytest.mark.parametrize("layout", ["samples-first", "features-first", "1-D"])
@pytest.mark.parametrize("sharding", list(SHARDINGS))
def test_sharded_arrays_are_read_directly_shard_by_shard(tmp_path, sharding, layout, absent):
    """Inner chunk (1, 0) is all zeros (inner-chunk-absent), or the whole first shard is."""
    data = values("samples-first" if layout != "1-D" else "1-D", "float32", absent=False)
    if absent == "inner-chunk-absent":
        data[(slice(CHUNK, 2 * CHUNK), slice(0, 2))[: data.ndim]] = 0
    elif absent == "shard-absent":
        data[: 2 * CHUNK] = 0
    inner, shards = (CHUNK, 2), (2 * CHUNK, 4)
    if layout == "1-D":
        inner, shards = (CHUNK,), (2 * CHUNK,)
    elif layout == "features-first":
        data, inner, shards = np.ascontiguousarray(data.T), inner[::-1], shards[::-1]
    arr = zarr.create_array(
        str(tmp_path / "x.zarr"),
        shape=data.shape,
        dtype=data.dtype,
        chunks=shards,
        serializer=ShardingCodec(
            chunk_shape=inner, codecs=[BytesCodec(), ZstdCodec()], **SHARDINGS[sharding]
        ),
        compressors=None,
    )
    arr[...] = data
    decoder = direct_decoder(arr, all_stored=False)
    assert decoder is not None and decoder.shard is not None
    assert_reads_equal_zarrs(arr, layout != "features-first", decoder)


UNCLAIMED = {
    "transposed": dict(filters=[TransposeCodec(order=(1, 0))]),
    "transposed and sharded": dict(filters=[TransposeCodec(order=(1, 0))], shards=(20, 3)),
    "sharded, big-endian index": dict(
        serializer=ShardingCodec(chunk_shape=(10, 3), index_codecs=[BytesCodec(endian="big")]),
        chunks=(20, 3),
    ),
    "crc32c before compression": dict(compressors=[Crc32cCodec(), ZstdCodec()]),
    "two compressors": dict(compressors=[BloscCodec(), ZstdCodec()]),
    "v2 filter": dict(zarr_format=2, filters=[numcodecs.Delta(dtype="float32")]),
    "v2 lz4": dict(zarr_format=2, compressors=numcodecs.LZ4()),
    "v2 zlib": dict(zarr_format=2, compressors=numcodecs.Zlib()),
    "v2 Fortran order": dict(zarr_format=2, order="F"),
}


@pytest.mark.parametrize("absent", [False, True], ids=["all-stored", "chunk-1-absent"])
@pytest.mark.parametrize("options", list(UNCLAIMED.values()), ids=list(UNCLAIMED))
def test_arrays_the_direct_decoder_does_not_claim_are_read_through_zarr(tmp_path, options, absent):
    data = values("samples-first", "float32", absent)
    options = dict(options)
    arr = write(tmp_path / "x.zarr", data, "samples-first", **options)
    assert direct_decoder(arr, all_stored=False) is None
    assert_reads_equal_zarrs(arr, True, None)


def test_dlr_arrays_record_every_chunk_stored_and_a_lost_one_is_an_error(dataset):
    path = dataset(203, 5, 50)
    ds = open_dataset(path)
    assert ds.x.attrs["dlr"]["all_chunks_stored"] is True
    decoder = ds.decoders[0]
    assert decoder.fill is None
    (Path(path) / "X" / "c" / "1" / "0").unlink()
    with pytest.raises(Exception, match=r"chunk \(1, 0\) of array 'X'.*missing"):
        read_block(ds.x, True, 50, 100, "d", 1, True, decoder)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("samples_first", [True, False], ids=["samples-first", "features-first"])
def test_dlr_datasets_are_read_directly_in_both_layouts(dataset, dtype, samples_first):
    ds = open_dataset(dataset(203, 5, 50, samples_first=samples_first, dtype=dtype))
    assert all(d is not None for d in ds.decoders[:2])
    for arr, decoder in zip((ds.x, ds.y), ds.decoders, strict=False):
        assert_reads_equal_zarrs(arr, samples_first or arr.ndim == 1, decoder)


def test_streamed_reads_reuse_one_buffer_per_thread_and_cached_reads_do_not(dataset):
    ds = open_dataset(dataset(200, 3, 50))
    d = ds.decoders[0]
    first = read_block(ds.x, True, 0, 50, "d", 0, True, d)
    second = read_block(ds.x, True, 50, 100, "d", 1, True, d)
    assert np.shares_memory(first, second)  # the first chunk's values are gone: streamed only
    kept = read_block(ds.x, True, 0, 50, "d", 0, False, d)
    again = read_block(ds.x, True, 50, 100, "d", 1, False, d)
    assert not np.shares_memory(kept, again)
    np.testing.assert_array_equal(kept, ds.x[0:50])


def test_streamed_reads_of_a_shorter_chunk_or_of_another_dataset_write_into_the_same_buffer(
    dataset,
):
    big = open_dataset(dataset(230, 4, 100))  # chunks of 100, 100 and 30 samples
    small = open_dataset(dataset(90, 3, 40, dtype="float32", seed=1))
    first = read_block(big.x, True, 0, 100, "big", 0, True, big.decoders[0])
    assert first.ctypes.data % 64 == 0
    for ds, start, stop in [(big, 200, 230), (small, 0, 40), (small, 80, 90)]:
        block = read_block(ds.x, True, start, stop, "d", start // 40, True, ds.decoders[0])
        assert np.shares_memory(block, first)  # no fresh pages for any of them
        np.testing.assert_array_equal(block, ds.x[start:stop])


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize(
    "x_dims, y_dims, samples_first",
    [
        (None, None, True),
        (("sample", "feature"), ("sample",), True),
        (("feature", "sample"), ("sample",), False),
        (("obs", "var"), ("obs",), True),
        (("var", "obs"), ("obs",), False),
        (("a", "sample"), None, False),
        (("feature", "b"), None, False),
        (("a", "b"), ("c",), True),
    ],
)
def test_the_sample_axis_is_the_one_the_dimension_names_say(
    x_dims, y_dims, samples_first, zarr_format
):
    """``dimension_names`` (v3) or xarray's ``_ARRAY_DIMENSIONS`` (v2): dlr's names, else the
    dimension X shares with y, else the one named "sample", else not the one named "feature"."""
    store = zarr.storage.MemoryStore()

    def array(name, shape, dims):
        if zarr_format == 2:
            named = {"attributes": {"_ARRAY_DIMENSIONS": list(dims)}} if dims else {}
        else:
            named = {"dimension_names": dims}
        return zarr.create_array(
            store, name=name, shape=shape, dtype="f8", zarr_format=zarr_format, **named
        )

    xa, ya = array("X", (6, 6), x_dims), array("y", (6,), y_dims)
    assert layout_of(xa, "d", ya) is samples_first
