"""One visit to a chunk gives exactly the oracle's partial sums, whatever the layout or dtype."""

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from dlr import kernel, oracle
from dlr.errors import DataError
from dlr.kernel import PARTS, ChunkContext, chunk_logits, chunk_partials, single_threaded_blas
from tests.conftest import assert_matches


def oracle_sums(X, y, w, b):
    """The oracle's unnormalized sums for a chunk X (n, m_c): (X·dZᵀ, ΣdZ, Σloss, Σy)."""
    m = X.shape[1]
    J, dw, db = oracle.gradients(X, y[None, :], w[:, None], b)
    return dw[:, 0] * m, db * m, J * m, y.sum()


@pytest.fixture
def chunk():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((6, 500))
    y = (rng.random(500) < 0.5).astype(np.float64)
    return X, y, rng.standard_normal(6), 0.3


@pytest.fixture(params=[True, False], ids=["samples-first", "features-first"])
def samples_first(request):
    return request.param


@pytest.fixture(params=[500, 64, 7, 1], ids=lambda r: f"block-{r}-samples")
def block(request, monkeypatch):
    """Force several cache blocks per chunk (and a ragged last block)."""
    monkeypatch.setattr(kernel, "MIN_BLOCK_SAMPLES", request.param)
    monkeypatch.setattr(kernel, "BLOCK_BYTES", 0)
    return request.param


def as_stored(X, samples_first):
    return np.ascontiguousarray(X.T if samples_first else X)


def test_partials_equal_the_oracle_sums(chunk, samples_first, block):
    X, y, w, b = chunk
    out = chunk_partials(as_stored(X, samples_first), y, w, b, samples_first=samples_first)
    g, sdz, sloss, sy = oracle_sums(X, y, w, b)
    n = len(w)
    assert_matches(out[:n], g)
    assert out[n + PARTS["sum_dz"]] == pytest.approx(sdz, rel=1e-12)
    assert out[n + PARTS["sum_loss"]] == pytest.approx(sloss, rel=1e-12)
    assert out[n + PARTS["sum_y"]] == sy


def test_float32_chunks_are_computed_exactly_in_float64(chunk, samples_first):
    X, y, w, b = chunk
    X32 = X.astype(np.float32)
    out = chunk_partials(
        as_stored(X32, samples_first), y.astype(np.uint8), w, b, samples_first=samples_first
    )
    g = oracle_sums(X32.astype(np.float64), y, w, b)[0]
    assert out.dtype == np.float64
    assert_matches(out[: len(w)], g)


def test_integer_features_and_boolean_labels_are_accepted(chunk):
    X, y, w, b = chunk
    Xi = np.round(X * 10).astype(np.int16)
    out = chunk_partials(as_stored(Xi, True), y.astype(bool), w, b, samples_first=True)
    assert_matches(out[: len(w)], oracle_sums(Xi.astype(np.float64), y, w, b)[0])


def test_logits_equal_the_oracle_forward_pass(chunk, samples_first, block):
    X, _, w, b = chunk
    z = chunk_logits(as_stored(X, samples_first), w, b, samples_first=samples_first)
    assert_matches(z, oracle.forward(X, w[:, None], b)[0][0])


@pytest.mark.parametrize("scale", [1e4, 1e6, 1e9])
def test_extreme_logits_give_finite_loss_and_gradient(scale):
    X = np.array([[1.0, -1.0, 2.0, -3.0]])
    y = np.array([0.0, 1.0, 1.0, 0.0])
    out = chunk_partials(X.T.copy(), y, np.array([scale]), 0.0, samples_first=True)
    assert np.all(np.isfinite(out))
    # logits ±scale: samples 0 and 1 are confidently wrong and cost |logit| each, 2 and 3 are right.
    assert out[1 + PARTS["sum_loss"]] == pytest.approx(2 * scale, rel=1e-12)


def test_confidently_wrong_samples_cost_their_logit():
    x = np.array([[1.0], [-1.0]])  # logits 1e4 and -1e4
    y = np.array([0.0, 1.0])  # both wrong
    out = chunk_partials(x, y, np.array([1e4]), 0.0, samples_first=True)
    assert out[1 + PARTS["sum_loss"]] == 2e4
    assert out[1 + PARTS["sum_dz"]] == 0.0  # dz = +1 and -1
    assert out[0] == 2.0  # 1·(+1) + (−1)·(−1)


def context():
    return ChunkContext("'data.zarr'", 3, 300, 400)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_validation_names_the_chunk_and_first_sample_with_non_finite_features(bad, samples_first):
    X = np.ones((3, 100))
    X[1, 42] = bad
    with pytest.raises(
        DataError,
        match=r"X holds NaN or inf in 'data.zarr', chunk 3 "
        r"\(samples 300–399\): first at sample 342",
    ):
        chunk_partials(
            as_stored(X, samples_first),
            np.zeros(100),
            np.zeros(3),
            0.0,
            samples_first=samples_first,
            check=context(),
        )


@pytest.mark.parametrize(("label", "shown"), [(2.0, "2"), (-1.0, "-1"), (0.5, "0.5")])
def test_validation_names_the_first_label_outside_0_1(label, shown):
    y = np.zeros(100)
    y[[17, 60]] = label
    with pytest.raises(
        DataError,
        match=rf"labels 0 and 1.*chunk 3 \(samples 300–399\) has {shown} "
        r"at sample 317",
    ):
        chunk_partials(np.ones((100, 2)), y, np.zeros(2), 0.0, samples_first=True, check=context())


def test_validation_reports_nan_labels_as_nan():
    y = np.zeros(100)
    y[5] = np.nan
    with pytest.raises(DataError, match=r"y holds NaN or inf in .*first at sample 305"):
        chunk_partials(np.ones((100, 2)), y, np.zeros(2), 0.0, samples_first=True, check=context())


def test_blas_runs_single_threaded_inside_kernels_and_is_restored_after():
    def blas_threads():
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    before = blas_threads()
    with single_threaded_blas():
        assert blas_threads() == {1}
        with single_threaded_blas():
            assert blas_threads() == {1}
        assert blas_threads() == {1}
    assert blas_threads() == before
