"""Datasets dlr did not write train as-is: each is written by another library with its defaults,
trained from its path, and gives the fit of the same arrays held in memory.

The data has a label chunk of only class 0 and a feature chunk of only zeros, which zarr (and
dask and xarray, which inherit its ``write_empty_chunks=False``) does not store: absent chunks
read as the fill value. Coefficients match the in-memory fit to 1e-10 (the chunk sums are added
in another grouping), and bit for bit where the stored chunking equals the in-memory one.
"""

import os
import warnings
from pathlib import Path

import dask.array as da
import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner
from sklearn.datasets import load_breast_cancer, load_wine
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec

import dlr
from dlr.cli import main
from dlr.dataset import open_dataset
from dlr.decode import read_block
from dlr.sources import from_dataset
from dlr.synthetic import make_dataset
from tests.conftest import assert_matches

M, N, CHUNK = 240, 4, 50  # 5 chunks, the last ragged


def data():
    """X (M, N) float64 and y (M,) int64 in {0, 1}: chunk 0 of y all 0, chunk 2 of X all 0."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((M, N))
    y = (X @ np.array([1.5, -1.0, 0.5, 2.0]) + rng.standard_normal(M) > 0).astype(np.int64)
    y[:CHUNK] = 0
    X[2 * CHUNK : 3 * CHUNK] = 0.0
    return X, y


def zarr_v3_defaults(path, X, y):
    group = zarr.open_group(path, mode="w")
    group.create_array("X", data=X, chunks=(CHUNK, N))
    group.create_array("y", data=y, chunks=(CHUNK,))
    return {}


def zarr_v2_format(path, X, y):
    group = zarr.open_group(path, mode="w", zarr_format=2)
    group.create_array("X", data=X, chunks=(CHUNK, N))
    group.create_array("y", data=y, chunks=(CHUNK,))
    return {}


def zarr_2_default_blosc(path, X, y):
    """zarr-python 2's default compressor: blosc-lz4 with byte shuffle."""
    group = zarr.open_group(path, mode="w", zarr_format=2)
    group.create_array("X", data=X, chunks=(CHUNK, N), compressors=numcodecs.Blosc())
    group.create_array("y", data=y, chunks=(CHUNK,), compressors=numcodecs.Blosc())
    return {}


def dask_to_zarr(path, X, y):
    da.from_array(X, chunks=(CHUNK, N)).to_zarr(path, component="X")
    da.from_array(y, chunks=CHUNK).to_zarr(path, component="y")
    return {}


def xarray_dataset(path, X, y, **to_zarr):
    """Variables X(sample, feature) and y(sample), coordinates, consolidated metadata."""
    xr.Dataset(
        {"X": (("sample", "feature"), X), "y": (("sample",), y)},
        coords={"sample": np.arange(M), "feature": [f"f{j}" for j in range(N)]},
    ).chunk({"sample": CHUNK}).to_zarr(path, **to_zarr)
    return {}


def xarray_zarr_v2(path, X, y):
    return xarray_dataset(path, X, y, zarr_format=2)


def xarray_other_names_features_first(path, X, y):
    """Any dimension names: the one the labels share with X is the sample axis."""
    xr.Dataset(
        {"features": (("var", "obs"), X.T), "label": (("obs",), y)},
        coords={"obs": np.arange(M)},
    ).chunk({"obs": CHUNK}).to_zarr(path)
    return {"x_name": "features", "y_name": "label"}


def sharded(path, X, y):
    group = zarr.open_group(path, mode="w")
    group.create_array("X", data=X, chunks=(CHUNK // 2, N), shards=(CHUNK, N))
    group.create_array("y", data=y, chunks=(CHUNK // 2,), shards=(CHUNK,))
    return {}


def big_endian(path, X, y):
    group = zarr.open_group(path, mode="w")
    for name, values, chunks in (("X", X, (CHUNK, N)), ("y", y, (CHUNK,))):
        group.create_array(
            name,
            data=values,
            chunks=chunks,
            serializer=BytesCodec(endian="big"),
            compressors=[BloscCodec(), Crc32cCodec()],
        )
    return {}


def y_chunked_apart_from_x(path, X, y):
    group = zarr.open_group(path, mode="w")
    group.create_array("X", data=X, chunks=(CHUNK, N))
    group.create_array("y", data=y, chunks=(70,))
    return {}


def features_first(path, X, y):
    group = zarr.open_group(path, mode="w")
    group.create_array(
        "X", data=X.T.copy(), chunks=(N, CHUNK), dimension_names=("feature", "sample")
    )
    group.create_array("y", data=y, chunks=(CHUNK,), dimension_names=("sample",))
    return {}


def x_chunked_along_features(path, X, y):
    group = zarr.open_group(path, mode="w")
    group.create_array("X", data=X, chunks=(CHUNK, 2))
    group.create_array("y", data=y, chunks=(CHUNK,))
    return {}


WRITERS = [
    zarr_v3_defaults,
    zarr_v2_format,
    zarr_2_default_blosc,
    dask_to_zarr,
    xarray_dataset,
    xarray_zarr_v2,
    xarray_other_names_features_first,
    sharded,
    big_endian,
    y_chunked_apart_from_x,
    features_first,
    x_chunked_along_features,
]


def in_memory_fit(X, y, **params):
    return dlr.LogisticRegression(**params).fit(X, y)


@pytest.mark.parametrize("write", WRITERS, ids=[w.__name__ for w in WRITERS])
def test_a_dataset_written_by_another_library_trains_like_its_arrays_in_memory(tmp_path, write):
    X, y = data()
    path = str(tmp_path / "data.zarr")
    names = write(path, X, y)
    model = dlr.LogisticRegression().fit(path, **names)
    expected = in_memory_fit(X, y)
    assert model.n_iter_ == expected.n_iter_
    assert_matches(model.coef_, expected.coef_)
    assert_matches(model.intercept_, expected.intercept_)


def test_all_fill_chunks_are_absent_from_the_store_and_read_as_fill_values(tmp_path):
    X, y = data()
    path = Path(tmp_path / "data.zarr")
    zarr_v3_defaults(str(path), X, y)
    assert sorted(os.listdir(path / "y" / "c")) == ["1", "2", "3", "4"]
    assert sorted(os.listdir(path / "X" / "c")) == ["0", "1", "3", "4"]


def test_an_xarray_group_trains_from_the_command_line_naming_its_variables(tmp_path):
    X, y = data()
    path = str(tmp_path / "data.zarr")
    xarray_other_names_features_first(path, X, y)
    model_dir = str(tmp_path / "model")
    result = CliRunner().invoke(
        main, ["train", path, "--model", model_dir, "--x", "features", "--y", "label"]
    )
    assert result.exit_code == 0, result.output
    assert_matches(dlr.load(model_dir).coef_, in_memory_fit(X, y).coef_)


@pytest.mark.parametrize("load", [load_wine, load_breast_cancer], ids=["wine", "breast-cancer"])
def test_scikit_learns_datasets_written_with_zarr_defaults_fit_bit_for_bit(tmp_path, load):
    """Small enough that zarr stores each array as one chunk, like the in-memory fit's."""
    X, y = load(return_X_y=True)
    path = str(tmp_path / "data.zarr")
    group = zarr.open_group(path, mode="w")
    group.create_array("X", data=X)
    group.create_array("y", data=y)
    assert group["X"].chunks == X.shape
    params = dict(solver="newton", tol=1e-8)
    model = dlr.LogisticRegression(**params).fit(path)
    expected = in_memory_fit(X, y, **params)
    np.testing.assert_array_equal(model.coef_, expected.coef_)
    np.testing.assert_array_equal(model.intercept_, expected.intercept_)


@pytest.mark.parametrize("array, key", [("y", ("c", "1")), ("X", ("c", "3", "0"))])
def test_a_chunk_deleted_from_a_dlr_dataset_is_still_refused_naming_it(tmp_path, array, key):
    path = str(tmp_path / "data.zarr")
    make_dataset(path, 200, 3, chunk_samples=50)
    Path(path, array, *key).unlink()
    with pytest.raises(dlr.DataError, match=f"array '{array}'.*missing.*'{array}/{'/'.join(key)}'"):
        dlr.LogisticRegression().fit(path)


# --- CF packing: xarray's scale_factor / add_offset / _FillValue ---------------------------

PACKINGS = {
    "int16-scale-offset": {"dtype": "int16", "scale_factor": 0.001, "add_offset": 0.5},
    "int16-scale": {"dtype": "int16", "scale_factor": 0.002},
    "int32-scale-offset": {"dtype": "int32", "scale_factor": 1e-6, "add_offset": -3.0},
    "uint8-scale-offset-fill": {
        "dtype": "uint8",
        "scale_factor": 0.05,
        "add_offset": -6.0,
        "_FillValue": 255,
    },
}


def xarray_packed(path, X, y, encoding, zarr_format=3):
    """X packed by xarray with ``encoding`` (an xarray ``to_zarr`` encoding of X)."""
    ds = xr.Dataset({"X": (("sample", "feature"), X), "y": (("sample",), y)})
    with warnings.catch_warnings():
        # xarray's advice to give a _FillValue for NaNs, which X has none of unless told
        warnings.filterwarnings("ignore", "saving variable", xr.SerializationWarning)
        ds.chunk({"sample": CHUNK}).to_zarr(path, encoding={"X": encoding}, zarr_format=zarr_format)


@pytest.mark.parametrize("zarr_format", [3, 2])
@pytest.mark.parametrize("packing", PACKINGS, ids=list(PACKINGS))
def test_xarray_packed_features_decode_to_exactly_the_values_xarray_reads(
    tmp_path, packing, zarr_format
):
    X, y = data()
    path = str(tmp_path / "data.zarr")
    xarray_packed(path, X, y, PACKINGS[packing], zarr_format)
    decoded = xr.open_zarr(path).X.values
    assert decoded.dtype == np.float64 and not np.array_equal(decoded, X)  # rounded by packing
    source = from_dataset(open_dataset(path))
    assert source.dtype == decoded.dtype
    for i, (start, stop) in enumerate(source.bounds):
        for streamed in (True, False):  # a per-thread buffer, or a fresh array to cache
            chunk = read_block(*source.x.expr(i, streamed=streamed)[1:])
            np.testing.assert_array_equal(chunk, decoded[start:stop])
            assert chunk.dtype == decoded.dtype


@pytest.mark.parametrize("cache_size", ["auto", 0], ids=["cached", "streamed"])
@pytest.mark.parametrize("packing", PACKINGS, ids=list(PACKINGS))
def test_xarray_packed_features_train_like_xarrays_decoded_values_in_memory(
    tmp_path, packing, cache_size
):
    X, y = data()
    path = str(tmp_path / "data.zarr")
    xarray_packed(path, X, y, PACKINGS[packing])
    model = dlr.LogisticRegression(cache_size=cache_size).fit(path)
    expected = in_memory_fit(xr.open_zarr(path).X.values, y)
    assert_matches(model.coef_, expected.coef_)
    assert_matches(model.intercept_, expected.intercept_)


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_a_missing_value_of_packed_features_is_refused_naming_chunk_and_sample(
    tmp_path, zarr_format
):
    X, y = data()
    X[123, 2] = np.nan
    path = str(tmp_path / "data.zarr")
    encoding = {"dtype": "int16", "scale_factor": 0.001, "_FillValue": -32768}
    xarray_packed(path, X, y, encoding, zarr_format)
    assert np.isnan(xr.open_zarr(path).X.values[123, 2])  # xarray reads it as missing
    with pytest.raises(dlr.DataError) as e:
        dlr.LogisticRegression().fit(path)
    assert str(e.value) == (
        f"array 'X' holds a missing value (_FillValue -32768) in '{path}', chunk 2 "
        "(samples 100–149): first at sample 123; dlr does not train on missing values: fill or "
        "drop them first"
    )


def test_a_missing_value_flagged_by_a_fill_attribute_alone_is_refused(tmp_path):
    X, y = data()
    path = str(tmp_path / "data.zarr")
    group = zarr.open_group(path, mode="w")
    group.create_array("X", data=X, chunks=(CHUNK, N), attributes={"missing_value": -9999.0})
    group.create_array("y", data=y, chunks=(CHUNK,))
    group["X"][7, 1] = -9999.0
    result = CliRunner().invoke(main, ["train", path, "--model", str(tmp_path / "model")])
    assert result.exit_code == 1
    assert result.stderr == (
        f"dlr: error: array 'X' holds a missing value (missing_value -9999.0) in '{path}', "
        "chunk 0 (samples 0–49): first at sample 7; dlr does not train on missing values: fill "
        "or drop them first\n"
    )


def test_unpacked_xarray_data_keeps_the_plain_read_path(tmp_path):
    """xarray's default _FillValue (NaN, for floats) flags nothing: no decoding step."""
    X, y = data()
    path = str(tmp_path / "data.zarr")
    xarray_dataset(path, X, y)
    assert zarr.open_group(path)["X"].attrs["_FillValue"] == "AAAAAAAA+H8="  # NaN, in base64
    ds = open_dataset(path)
    assert ds.packings == (None, None, None) and ds.decoders[0] is not None


def test_info_says_how_packed_features_decode(tmp_path):
    X, y = data()
    path = str(tmp_path / "data.zarr")
    xarray_packed(path, X, y, PACKINGS["int16-scale-offset"])
    result = CliRunner().invoke(main, ["info", path])
    assert result.exit_code == 0, result.output
    assert (
        "packed    CF: int16 × scale_factor 0.001 + add_offset 0.5 → float64, decoded as xarray "
        "does\ndecoded   0.0 MB of features" in result.stdout
    )
