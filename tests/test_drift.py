"""Drift from row summaries agrees with NumPy on the whole arrays; summaries merge exactly.

A summary (dlr.summary) of a set of rows is what drift needs of it; merged over parts (spans,
blocks, chunks) it is the summary of all the rows: counts, ranges, class counts and histograms
exactly, means and squared deviations to rounding. The out-of-core pass over a zarr source
(dlr.spansummary.summarize, for spans from before summaries were kept) gives the same.
"""

import numpy as np
import pytest
import zarr

from dlr.dataset import create_arrays, open_dataset
from dlr.drift import PSI_FLOOR, drift
from dlr.sources import from_dataset
from dlr.spansummary import summarize
from dlr.summary import Accumulator, Edges, block_rows, histogram, merge, of_rows
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


def numpy_drift(xr, yr, xn, yn, lo, hi, bins):
    """The statistics on the whole arrays at once, PSI on ``bins`` bins over [lo, hi] (the
    oracle)."""
    xr, xn = xr.astype(np.float64), xn.astype(np.float64)
    smd = (xn.mean(0) - xr.mean(0)) / np.sqrt((xr.var(0) + xn.var(0)) / 2)
    psi = []
    for j in range(xr.shape[1]):
        edges = np.linspace(lo[j], hi[j], bins + 1)
        edges[0], edges[-1] = -np.inf, np.inf  # outside the range: first / last bin
        p = np.maximum(np.histogram(xr[:, j], edges)[0] / len(xr), PSI_FLOOR)
        q = np.maximum(np.histogram(xn[:, j], edges)[0] / len(xn), PSI_FLOOR)
        psi.append(((q - p) * np.log(q / p)).sum())
    return smd, np.array(psi), yn.mean() - yr.mean()


def in_parts(x, y, edges, cuts):
    """The summaries of the rows of x split at ``cuts``, merged in order."""
    bounds = [0, *cuts, len(y)]
    return merge(of_rows(x[a:b], y[a:b], edges) for a, b in zip(bounds, bounds[1:], strict=False))


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    xr = rng.normal(3.0, 2.0, (1000, 4))
    yr = (rng.random(1000) < 0.3).astype(np.int64)
    xn = rng.normal(3.0, 2.0, (300, 4))
    xn[:, 1] += 1.5  # a shifted feature
    xn[:, 2] *= 3.0  # a widened one, partly outside the edges
    yn = (rng.random(300) < 0.5).astype(np.int64)
    return xr, yr, xn, yn


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cuts", [(), (1, 500, 999), (128, 256, 384)])
def test_drift_from_summaries_matches_numpy(data, dtype, cuts):
    xr, yr, xn, yn = data
    xr, xn = xr.astype(dtype), xn.astype(dtype)
    # the registry's edges: fixed from other rows (its first ingest), here a narrower range
    lo, hi = np.array([0.0, 1.0, -1.0, 2.0]), np.array([6.0, 5.0, 7.0, 4.0])
    edges = Edges(10, lo, hi)
    reference = in_parts(xr, yr, edges, cuts)
    new = in_parts(xn, yn, edges, [c for c in cuts if c < 300])
    result = drift(reference, new, names=["a", "b", "c", "d"])
    smd, psi, label_shift = numpy_drift(xr, yr, xn, yn, lo, hi, 10)
    assert [f["name"] for f in result["features"]] == ["a", "b", "c", "d"]
    assert_matches([f["smd"] for f in result["features"]], smd)
    assert_matches([f["psi"] for f in result["features"]], psi)
    assert_matches([f["reference_std"] for f in result["features"]], xr.astype(float).std(0))
    assert_matches([f["new_mean"] for f in result["features"]], xn.astype(float).mean(0))
    rates = result["label_rates"]
    assert rates["reference"] == {"0": np.mean(yr == 0), "1": np.mean(yr == 1)}
    assert rates["new"]["1"] - rates["reference"]["1"] == pytest.approx(label_shift, rel=1e-12)
    assert result["smd"] == pytest.approx(np.abs(smd).max(), rel=1e-10)
    assert result["psi"] == pytest.approx(psi.max(), rel=1e-10)
    assert result["label_shift"] == pytest.approx(abs(label_shift), rel=1e-10)
    assert (result["reference_samples"], result["new_samples"], result["bins"]) == (1000, 300, 10)
    # the shifted and widened features are the ones flagged
    assert {f["name"] for f in result["features"] if f["psi"] > 0.25} == {"b", "c"}


def test_summaries_merged_over_parts_are_the_summary_of_all_rows(data):
    xr, yr, _, _ = data
    edges = Edges(7, xr.min(0), xr.max(0))
    whole = of_rows(xr, yr, edges)
    for cuts in [(10,), (1, 2, 3, 997), (250, 500, 750), (0, 1000)]:  # empty parts too
        merged = in_parts(xr, yr, edges, cuts)
        assert merged.count == whole.count == 1000
        assert merged.labels == whole.labels
        for field in ("min", "max", "hist"):
            np.testing.assert_array_equal(getattr(merged, field), getattr(whole, field))
        assert_matches(merged.mean, xr.mean(0))
        assert_matches(merged.var, xr.var(0))


def test_a_summary_is_the_same_bits_whatever_the_batches():
    rng = np.random.default_rng(3)
    n = 3
    m = 2 * block_rows(n) + 1234  # more than two blocks
    x = rng.normal(size=(m, n)).astype(np.float32)
    y = rng.integers(0, 3, m)
    edges = Edges(10, np.full(n, -2.0), np.full(n, 2.0))
    results, acc = [], None
    for batch in (m, 65536, 1000, 777):
        acc = Accumulator(n, edges, reuse=acc)  # in the buffers of the one before: the same
        for start in range(0, m, batch):
            acc.add(x[start : start + batch], y[start : start + batch])
        results.append(acc.result())
    for r in results[1:]:
        assert r.count == m and r.labels == results[0].labels
        for a, b in zip(r, results[0], strict=True):
            if isinstance(a, np.ndarray):
                assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize(
    "chunks, samples_first, dtype",
    [(128, True, "float64"), (1000, False, "float64"), (97, True, "float32")],
)
def test_the_out_of_core_pass_gives_the_summary_of_the_rows(
    tmp_path, data, chunks, samples_first, dtype
):
    xr, yr, xn, yn = data
    xr, xn = xr.astype(dtype), xn.astype(dtype)
    a = write(tmp_path / "a.zarr", xr, yr, chunks, samples_first)
    b = write(tmp_path / "b.zarr", xn, yn, 64, samples_first)
    edges = Edges(10, xr.min(0).astype(float), xr.max(0).astype(float))
    got = summarize([a, b], edges)
    for summary, (x, y) in zip(got, [(xr, yr), (xn, yn)], strict=True):
        want = of_rows(x, y, edges)
        assert (summary.count, summary.labels) == (want.count, want.labels)
        np.testing.assert_array_equal(summary.hist, want.hist)
        np.testing.assert_array_equal(summary.min, want.min)
        assert_matches(summary.mean, want.mean)
        assert_matches(summary.m2, want.m2)
    counts = histogram(np.ascontiguousarray(xn.T), edges, samples_first=False)
    np.testing.assert_array_equal(counts, of_rows(xn, yn, edges).hist)


def test_no_drift_between_identical_sets(data):
    xr, yr, _, _ = data
    edges = Edges(10, xr.min(0), xr.max(0))
    result = drift(in_parts(xr, yr, edges, (100,)), in_parts(xr, yr, edges, (333, 666)))
    assert result["smd"] == pytest.approx(0, abs=1e-12)
    assert result["psi"] == 0
    assert result["label_shift"] == 0


def test_a_constant_feature_has_zero_smd_when_unchanged_and_inf_when_moved():
    x = np.ones((50, 2))
    y = np.arange(50) % 2
    moved = x.copy()
    moved[:, 1] = 2.0
    edges = Edges(10, x.min(0), x.max(0))  # zero width: every value in the first bin
    result = drift(of_rows(x, y, edges), of_rows(moved, y, edges))
    assert [f["smd"] for f in result["features"]] == [0.0, np.inf]
    assert [f["psi"] for f in result["features"]] == [0.0, 0.0]
