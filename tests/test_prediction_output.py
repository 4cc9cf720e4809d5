"""What ``dlr predict`` writes: a zarr group that ``xarray.open_zarr`` opens as a Dataset, with
no warning, whose variable ``probability`` holds the model's probabilities along ``sample``
(binary: P(second class)) or (``sample``, ``class``) with the model's classes as coordinate;
readable by zarr alone too, and recording that every chunk is stored.

Written from the command line and from Python (:func:`dlr.scoring.write_probabilities`), for a
binary and a multinomial model, and compared with the in-memory prediction of the same data.
"""

import os
import warnings

import numpy as np
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner

import dlr
from dlr import scoring
from dlr.cli import main
from dlr.dataset import open_dataset
from dlr.errors import DataError
from dlr.sources import from_dataset
from tests.test_solvers import make_problem, write

M, CHUNK = 230, 60  # 4 chunks, the last ragged


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """{"binary"/"three": (dataset path, saved model path, X in memory, in-memory model)}:
    the binary model's labels are 3 and 7, the multinomial one's -1, 4 and 10."""
    root = tmp_path_factory.mktemp("predictions")
    rng = np.random.default_rng(11)
    cases = {}
    for name, classes in (("binary", [3, 7]), ("three", [-1, 4, 10])):
        X, codes = make_problem(rng, m=M, classes=len(classes))
        y = np.asarray(classes)[codes]
        path = write(root / f"{name}.zarr", X, codes, chunk=CHUNK)  # X is what predict reads
        model = dlr.LogisticRegression().fit(X, y)
        model.save(str(root / f"{name}-model"))
        cases[name] = (path, str(root / f"{name}-model"), X, model)
    return cases


def predict_cli(data, model, out):
    result = CliRunner().invoke(main, ["predict", model, data, "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def predict_python(data, model, out):
    model = dlr.load(model)
    scoring.write_probabilities(
        from_dataset(open_dataset(data, y=None)), model.theta_, str(out), classes=model.classes_
    )


def open_quietly(out) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        return xr.open_zarr(str(out))


@pytest.mark.parametrize("predict", [predict_cli, predict_python], ids=["cli", "python"])
def test_binary_predictions_open_in_xarray_as_p_of_the_second_class(fitted, tmp_path, predict):
    data, model_dir, X, model = fitted["binary"]
    out = tmp_path / "proba.zarr"
    predict(data, model_dir, out)
    ds = open_quietly(out)
    p = ds["probability"]
    assert p.dims == ("sample",) and p.dtype == np.float64
    assert p.chunks == ((CHUNK, CHUNK, CHUNK, M - 3 * CHUNK),)
    assert p.attrs["long_name"] == "P(y=7)"
    assert ds.attrs["dlr"]["classes"] == [3, 7]
    assert zarr.open_group(str(out), mode="r")["probability"].attrs["dlr"] == {
        "all_chunks_stored": True
    }
    np.testing.assert_allclose(p.values, model.predict_proba(X)[:, 1], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["probability"][:], p.values)


@pytest.mark.parametrize("predict", [predict_cli, predict_python], ids=["cli", "python"])
def test_multiclass_predictions_open_in_xarray_with_the_classes_as_coordinate(
    fitted, tmp_path, predict
):
    data, model_dir, X, model = fitted["three"]
    out = tmp_path / "proba.zarr"
    predict(data, model_dir, out)
    ds = open_quietly(out)
    p = ds["probability"]
    assert p.dims == ("sample", "class") and p.shape == (M, 3)
    assert ds["class"].values.tolist() == [-1, 4, 10]
    expected = model.predict_proba(X)
    np.testing.assert_allclose(p.values, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(p.sel({"class": 10}).values, expected[:, 2], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["probability"][:], p.values)


def test_string_classes_are_the_coordinate_too(tmp_path):
    rng = np.random.default_rng(3)
    X, codes = make_problem(rng, m=M, classes=3)
    model = dlr.LogisticRegression().fit(X, np.array(["cat", "dog", "emu"])[codes])
    data = write(tmp_path / "data.zarr", X, codes, chunk=CHUNK)
    out = tmp_path / "proba.zarr"
    scoring.write_probabilities(
        from_dataset(open_dataset(data, y=None)), model.theta_, str(out), classes=model.classes_
    )
    ds = open_quietly(out)
    assert ds["class"].values.tolist() == ["cat", "dog", "emu"]
    np.testing.assert_allclose(ds["probability"].values, model.predict_proba(X), atol=1e-12)


def test_every_prediction_chunk_is_recorded_stored_so_a_lost_one_is_an_error(fitted, tmp_path):
    data, model_dir, _, _ = fitted["three"]
    out = tmp_path / "proba.zarr"
    predict_cli(data, model_dir, out)
    group = zarr.open_group(str(out), mode="r")
    for name in ("probability", "class"):
        assert group[name].attrs["dlr"]["all_chunks_stored"] is True
    open_dataset(str(out), x="probability", y=None)  # complete: opens
    chunk = out / "probability" / "c" / "2" / "0"
    assert chunk.is_file()
    os.remove(chunk)
    with pytest.raises(DataError, match=r"chunk \(2, 0\) of array 'probability' .* missing"):
        open_dataset(str(out), x="probability", y=None)
