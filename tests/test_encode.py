"""The direct chunk writer stores every chunk as the very bytes zarr stores for it, and claims
no array whose chunks it would write otherwise: those are left to zarr."""

import os

import numpy as np
import pytest
import zarr
from numcodecs import Blosc

from dlr import encode
from dlr.dataset import codecs
from dlr.encode import direct_writer
from tests.registry_support import tree

CASES = [  # dtype, chunk shape of the rows: dlr's X (float32, float64), y, w and more
    ("float64", (64, 5)),
    ("float32", (64, 7)),
    ("int64", (64,)),
    ("float64", (1,)),
    ("int8", (33,)),
    ("bool", (50,)),
]


def values(dtype: str, shape: tuple, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) < 0.3
    if dtype.startswith("int"):
        return rng.integers(-100, 100, shape).astype(dtype)
    return np.round(rng.normal(size=shape), 3).astype(dtype)  # compressible, not trivially


def empty_array(directory, dtype: str, chunk: tuple, rows: int) -> zarr.Array:
    group = zarr.open_group(str(directory), mode="w")
    return group.create_array("a", shape=(rows, *chunk[1:]), chunks=chunk, dtype=dtype, **codecs())


@pytest.mark.parametrize(("dtype", "chunk"), CASES)
def test_every_chunk_is_the_bytes_zarr_stores(tmp_path, dtype, chunk):
    rows = 3 * chunk[0]
    data = values(dtype, (rows, *chunk[1:]), seed=1)
    by_zarr = empty_array(tmp_path / "zarr", dtype, chunk, rows)
    by_zarr[...] = data
    ours = empty_array(tmp_path / "direct", dtype, chunk, rows)
    writer = direct_writer(ours, str(tmp_path / "direct" / "a"))
    assert writer is not None
    for i in range(3):
        path = writer.write(i, data[i * chunk[0] : (i + 1) * chunk[0]])
        assert os.path.isfile(path)
    assert tree(tmp_path / "direct") == tree(tmp_path / "zarr")
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "direct" / "a"))[...], data)


def test_a_chunk_of_another_shape_or_dtype_is_refused(tmp_path):
    arr = empty_array(tmp_path / "g", "float64", (10, 3), 30)
    writer = direct_writer(arr, str(tmp_path / "g" / "a"))
    with pytest.raises(ValueError, match=r"a chunk of \(10, 3\) float64, got \(9, 3\) float64"):
        writer.write(2, np.zeros((9, 3)))
    with pytest.raises(ValueError, match="got \\(10, 3\\) float32"):
        writer.write(0, np.zeros((10, 3), dtype=np.float32))


def test_a_short_write_is_continued(tmp_path, monkeypatch):
    """os.writev may write less than it is given: the rest follows, nothing is lost."""
    data = values("float64", (200, 4), seed=2)
    by_zarr = empty_array(tmp_path / "zarr", "float64", (200, 4), 200)
    by_zarr[...] = data
    ours = empty_array(tmp_path / "direct", "float64", (200, 4), 200)
    writer = direct_writer(ours, str(tmp_path / "direct" / "a"))
    writev, calls = os.writev, []

    def short(fd, views):
        calls.append(len(views))
        return writev(fd, [memoryview(views[0])[:1000]])

    monkeypatch.setattr(os, "writev", short)
    writer.write(0, data)
    assert len(calls) > 3
    assert tree(tmp_path / "direct") == tree(tmp_path / "zarr")


def make(tmp_path, **kw) -> zarr.Array:
    options = {"shape": (40, 3), "chunks": (10, 3), "dtype": "float64", **codecs(), **kw}
    return zarr.open_group(str(tmp_path / "g"), mode="w").create_array("a", **options)


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(
            {"compressors": [zarr.codecs.ZstdCodec(), zarr.codecs.Crc32cCodec()]}, id="zstd"
        ),  # fmt: skip
        pytest.param({"compressors": [zarr.codecs.BloscCodec(cname="lz4")]}, id="no-crc32c"),
        pytest.param({"compressors": [zarr.codecs.Crc32cCodec()]}, id="crc32c-alone"),
        pytest.param({"serializer": zarr.codecs.BytesCodec(endian="big")}, id="big-endian"),
        pytest.param({"shards": (20, 3)}, id="sharded"),
        pytest.param({"chunks": (10, 2)}, id="chunks-split-the-columns"),
        pytest.param({"filters": [zarr.codecs.TransposeCodec(order=(1, 0))]}, id="transposed"),
        pytest.param({"dtype": "complex128"}, id="complex"),
        pytest.param({"config": {"write_empty_chunks": False}}, id="empty-chunks-not-stored"),
    ],
)
def test_an_array_stored_any_other_way_is_left_to_zarr(tmp_path, other):
    arr = make(tmp_path, **other)
    assert direct_writer(arr, str(tmp_path / "g" / "a")) is None


def test_zarr_v2_and_stores_that_are_not_local_are_left_to_zarr(tmp_path):
    v2 = zarr.open_group(str(tmp_path / "v2"), mode="w", zarr_format=2).create_array(
        "a", shape=(40, 3), chunks=(10, 3), dtype="float64"
    )
    assert direct_writer(v2, str(tmp_path / "v2" / "a")) is None
    assert direct_writer(make(tmp_path), None) is None


@pytest.mark.parametrize("deviation", [{"clevel": 4}, {"shuffle": Blosc.NOSHUFFLE},
                                       {"blocksize": 4096}])  # fmt: skip
def test_where_zarr_would_encode_otherwise_than_the_probe_the_array_is_left_to_it(
    tmp_path, monkeypatch, deviation
):
    """The probe chunk is encoded both ways: a numcodecs call that differs from zarr's in any
    parameter is caught before any chunk is written."""
    encode._checked_blosc.cache_clear()
    monkeypatch.setattr(encode, "Blosc", lambda **kw: Blosc(**{**kw, **deviation}))
    try:
        assert direct_writer(make(tmp_path), str(tmp_path / "g" / "a")) is None
    finally:
        encode._checked_blosc.cache_clear()
