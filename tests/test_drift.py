"""Drift statistics computed out-of-core from chunk sums agree with NumPy on the whole arrays."""

import numpy as np
import pytest
import zarr

from dlr.dataset import create_arrays, open_dataset
from dlr.drift import PSI_FLOOR, drift
from dlr.sources import from_dataset
from tests.conftest import assert_matches


def write(path, x, y, chunk_samples, samples_first=True):
    group = zarr.open_group(str(path), mode="w")
    create_arrays(
        group, x.shape[0], x.shape[1], chunk_samples, samples_first=samples_first, dtype=x.dtype
    )
    with zarr.config.set({"array.write_empty_chunks": True}):  # an all-zero y chunk too
        group["X"][:] = x if samples_first else x.T
        group["y"][:] = y
    return from_dataset(open_dataset(str(path)))


def numpy_drift(xr, yr, xn, yn, bins):
    """The statistics on the whole arrays at once (the oracle)."""
    xr, xn = xr.astype(np.float64), xn.astype(np.float64)
    smd = (xn.mean(0) - xr.mean(0)) / np.sqrt((xr.var(0) + xn.var(0)) / 2)
    psi = []
    for j in range(xr.shape[1]):
        edges = np.linspace(xr[:, j].min(), xr[:, j].max(), bins + 1)
        edges[0], edges[-1] = -np.inf, np.inf  # outside the range: first / last bin
        p = np.maximum(np.histogram(xr[:, j], edges)[0] / len(xr), PSI_FLOOR)
        q = np.maximum(np.histogram(xn[:, j], edges)[0] / len(xn), PSI_FLOOR)
        psi.append(((q - p) * np.log(q / p)).sum())
    return smd, np.array(psi), yn.mean() - yr.mean()


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    xr = rng.normal(3.0, 2.0, (1000, 4))
    yr = (rng.random(1000) < 0.3).astype(np.uint8)
    xn = rng.normal(3.0, 2.0, (300, 4))
    xn[:, 1] += 1.5  # a shifted feature
    xn[:, 2] *= 3.0  # a widened one, partly outside the reference's range
    yn = (rng.random(300) < 0.5).astype(np.uint8)
    return xr, yr, xn, yn


@pytest.mark.parametrize(
    "chunks, samples_first, dtype",
    [((128, 64), True, "float64"), ((1000, 300), False, "float64"), ((97, 31), True, "float32")],
)
def test_drift_matches_numpy(tmp_path, data, chunks, samples_first, dtype):
    xr, yr, xn, yn = data
    xr, xn = xr.astype(dtype), xn.astype(dtype)
    reference = write(tmp_path / "ref.zarr", xr, yr, chunks[0], samples_first)
    new = write(tmp_path / "new.zarr", xn, yn, chunks[1], samples_first)
    result = drift(reference, new, names=["a", "b", "c", "d"], bins=10)
    smd, psi, label_shift = numpy_drift(xr, yr, xn, yn, 10)
    assert [f["name"] for f in result["features"]] == ["a", "b", "c", "d"]
    assert_matches([f["smd"] for f in result["features"]], smd)
    # the bin of a value on an inner edge can differ by rounding: counts agree to ~1e-10 here
    assert_matches([f["psi"] for f in result["features"]], psi)
    assert_matches(
        result["label_rates"]["new"]["1"] - result["label_rates"]["reference"]["1"], label_shift
    )
    assert result["smd"] == pytest.approx(np.abs(smd).max(), rel=1e-10)
    assert result["psi"] == pytest.approx(psi.max(), rel=1e-10)
    assert result["label_shift"] == pytest.approx(abs(label_shift), rel=1e-10)
    assert (result["reference_samples"], result["new_samples"]) == (1000, 300)
    # the shifted and widened features are the ones flagged
    flagged = {f["name"] for f in result["features"] if f["psi"] > 0.25}
    assert flagged == {"b", "c"}


def test_no_drift_between_identical_sets(tmp_path, data):
    xr, yr, _, _ = data
    a = write(tmp_path / "a.zarr", xr, yr, 100)
    b = write(tmp_path / "b.zarr", xr, yr, 333)
    result = drift(a, b)
    assert result["smd"] == pytest.approx(0, abs=1e-12)
    assert result["psi"] == 0
    assert result["label_shift"] == 0


def test_a_constant_feature_has_zero_smd_when_unchanged_and_inf_when_moved(tmp_path):
    x = np.ones((50, 2))
    y = np.arange(50) % 2
    moved = x.copy()
    moved[:, 1] = 2.0
    result = drift(write(tmp_path / "a.zarr", x, y, 20), write(tmp_path / "b.zarr", moved, y, 20))
    assert [f["smd"] for f in result["features"]] == [0.0, np.inf]
