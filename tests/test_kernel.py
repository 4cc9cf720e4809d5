"""One visit to a chunk gives exactly the partial sums the equations define, in any layout."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from dlr import kernel, oracle
from dlr.chunks import ChunkContext
from dlr.errors import DataError
from dlr.kernel import (
    chunk_logits,
    chunk_partials,
    chunk_summary,
    merge_summaries,
    partials_at_zero,
)
from dlr.oracle import augmented, binary_reference, softmax_reference
from tests.conftest import assert_matches

N, M = 6, 500


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((M, N))  # samples × features
    y = (rng.random(M) < 0.5).astype(np.float64)
    classes = rng.integers(0, 4, M)
    s = rng.random(M) * 2
    return X, y, classes, s, rng.standard_normal((1, N + 1)), rng.standard_normal((4, N + 1))


@pytest.fixture(params=[True, False], ids=["samples-first", "features-first"])
def samples_first(request):
    return request.param


@pytest.fixture(params=[500, 64, 7, 1], ids=lambda r: f"block-{r}-samples")
def block(request, monkeypatch):
    """Force several cache blocks per chunk (and a ragged last block)."""
    monkeypatch.setattr(kernel, "MIN_BLOCK_SAMPLES", request.param)
    monkeypatch.setattr(kernel, "BLOCK_BYTES", 0)
    return request.param


def stored(X, samples_first):
    return np.ascontiguousarray(X if samples_first else X.T)


def test_binary_partials_equal_the_oracle_sums(data, samples_first, block):
    X, y, _, _, theta, _ = data
    out = chunk_partials(stored(X, samples_first), y, None, theta, samples_first=samples_first)
    J, dw, db = oracle.gradients(X.T, y[None, :], theta[0, :N, None], theta[0, N])
    assert out["loss"] == pytest.approx(J * M, rel=1e-13)
    assert_matches(out["grad"], np.append(dw[:, 0], db) * M)
    assert "hess" not in out


def test_weighted_binary_partials_and_hessian_follow_the_equations(data, samples_first, block):
    X, y, _, s, theta, _ = data
    out = chunk_partials(
        stored(X, samples_first), y, s, theta, samples_first=samples_first, hessian=True
    )
    loss, grad, hess = binary_reference(X, y, s, theta)
    assert out["loss"] == pytest.approx(loss, rel=1e-13)
    assert_matches(out["grad"], grad)
    assert_matches(out["hess"], hess)


def test_multinomial_partials_and_hessian_follow_the_equations(data, samples_first, block):
    X, _, t, s, _, theta = data
    for weights in (None, s):
        out = chunk_partials(
            stored(X, samples_first), t, weights, theta, samples_first=samples_first, hessian=True
        )
        loss, grad, hess = softmax_reference(X, t, np.ones(M) if weights is None else s, theta)
        assert out["loss"] == pytest.approx(loss, rel=1e-13)
        assert_matches(out["grad"], grad)
        assert_matches(out["hess"], hess)
        assert_matches(out["hess"], out["hess"].T, 1e-14)


def test_float32_chunks_are_computed_exactly_in_float64(data, samples_first):
    X, y, _, _, theta, _ = data
    X32 = X.astype(np.float32)
    out = chunk_partials(
        stored(X32, samples_first), y.astype(np.uint8), None, theta, samples_first=samples_first
    )
    ref = binary_reference(X32.astype(np.float64), y, np.ones(M), theta)
    assert out["grad"].dtype == np.float64
    assert_matches(out["grad"], ref[1])


def test_integer_features_and_boolean_labels_are_accepted(data):
    X, y, _, _, theta, _ = data
    Xi = np.round(X * 10).astype(np.int16)
    out = chunk_partials(Xi, y.astype(bool), None, theta, samples_first=True)
    assert_matches(out["grad"], binary_reference(Xi.astype(np.float64), y, np.ones(M), theta)[1])


def test_logits_equal_the_oracle_forward_pass(data, samples_first, block):
    X, _, _, _, theta, theta_k = data
    z = chunk_logits(stored(X, samples_first), theta, samples_first=samples_first)
    assert z.shape == (M,)
    assert_matches(z, oracle.forward(X.T, theta[0, :N, None], theta[0, N])[0][0])
    zk = chunk_logits(stored(X, samples_first), theta_k, samples_first=samples_first)
    assert zk.shape == (M, 4)
    assert_matches(zk, augmented(X) @ theta_k.T)


@pytest.mark.parametrize("scale", [1e4, 1e6, 1e9])
def test_extreme_logits_give_finite_loss_gradient_and_hessian(scale):
    X = np.array([[1.0], [-1.0], [2.0], [-3.0]])
    y = np.array([0.0, 1.0, 1.0, 0.0])
    out = chunk_partials(X, y, None, np.array([[scale, 0.0]]), samples_first=True, hessian=True)
    assert all(np.all(np.isfinite(v)) for v in out.values())
    # logits ±scale: samples 0 and 1 are confidently wrong and cost |logit| each, 2 and 3 are right.
    assert out["loss"] == pytest.approx(2 * scale, rel=1e-12)
    theta = np.array([[scale, 0.0], [-scale, 0.0], [0.0, 0.0]])
    out = chunk_partials(X, np.array([0, 1, 2, 0]), None, theta, samples_first=True, hessian=True)
    assert all(np.all(np.isfinite(v)) for v in out.values())


def test_confidently_wrong_samples_cost_their_logit():
    x = np.array([[1.0], [-1.0]])  # logits 1e4 and -1e4
    out = chunk_partials(x, np.array([0.0, 1.0]), None, np.array([[1e4, 0.0]]), samples_first=True)
    assert out["loss"] == 2e4
    np.testing.assert_array_equal(out["grad"], [[2.0, 0.0]])  # dz = +1 and -1


def context():
    return ChunkContext("'data.zarr'", 3, 300, 400)


def summarize(X, y=None, s=None, samples_first=True, moments=False):
    return chunk_summary(
        stored(X, samples_first),
        y,
        s,
        samples_first=samples_first,
        check=context(),
        moments=moments,
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    "labels", [None, np.zeros(100), np.arange(100) % 3], ids=["no-y", "1", "3"]
)
@pytest.mark.parametrize("moments", [False, True], ids=["", "moments"])
def test_summary_names_the_chunk_and_first_sample_with_non_finite_features(
    bad, labels, moments, samples_first, block
):
    X = np.ones((100, 3))
    X[42, 1] = bad
    X[70, 2] = bad
    with pytest.raises(
        DataError,
        match=r"X holds NaN or inf in 'data.zarr', chunk 3 "
        r"\(samples 300–399\): first at sample 342",
    ):
        summarize(X, labels, samples_first=samples_first, moments=moments)


@pytest.mark.parametrize(
    ("label", "message"),
    [
        (np.nan, r"y holds NaN or inf in .*chunk 3 .*first at sample 317"),
        (np.inf, r"y holds NaN or inf in .*first at sample 317"),
        (
            0.5,
            r"y must hold integer class labels \(not a continuous target\), but .*chunk 3 "
            r"\(samples 300–399\) has 0.5 at sample 317",
        ),
    ],
)
def test_summary_rejects_labels_that_are_not_integers(label, message):
    y = np.zeros(100)
    y[[17, 60]] = label
    with pytest.raises(DataError, match=message):
        summarize(np.ones((100, 2)), y)


@pytest.mark.parametrize("weight", [-1.0, np.nan, np.inf])
def test_summary_rejects_negative_or_non_finite_sample_weights(weight):
    s = np.ones(100)
    s[9] = weight
    with pytest.raises(DataError, match=r"sample weights must be finite and ≥ 0, .* at sample 309"):
        summarize(np.ones((100, 2)), np.zeros(100), s)


def test_summary_refuses_a_continuous_target():
    with pytest.raises(DataError, match=r"1001 distinct labels in 'data.zarr', chunk 3"):
        summarize(np.ones((1001, 1)), np.arange(1001))


def test_summary_counts_classes_and_moments_and_merges_in_order(data, block):
    X, _, t, s, _, _ = data
    s = s.copy()
    s[123] = 0.0  # a part whose samples all weigh nothing adds nothing to the moments
    whole = summarize(X, t + 5, s, moments=True)
    parts = [
        summarize(X[a:b], t[a:b] + 5, s[a:b], moments=True)
        for a, b in ((0, 123), (123, 124), (124, 500))
    ]
    merged = merge_summaries(parts)
    for summary in (whole, merged):
        assert summary["count"] == M
        scaler = StandardScaler().fit(X, sample_weight=s)  # moments weighted by s
        assert_matches(summary["moment_weight"], s.sum(), 1e-14)
        assert_matches(summary["mean"], scaler.mean_, 1e-13)
        assert_matches(summary["m2"], scaler.var_ * s.sum(), 1e-13)
        np.testing.assert_array_equal(summary["labels"], [5, 6, 7, 8])
        np.testing.assert_array_equal(summary["counts"], np.bincount(t))
        assert_matches(summary["weights"], np.bincount(t, weights=s), 1e-14)
        sums = [(s[t == c, None] * X[t == c]).sum(axis=0) for c in range(4)]
        assert_matches(summary["label_sums"], np.array(sums), 1e-13)
    assert "mean" not in summarize(X, t, s)


def test_without_moments_or_with_many_labels_the_summary_omits_them(data):
    X, _, t, s, _, _ = data
    assert {"mean", "m2"}.isdisjoint(summarize(X, t, s))
    many = np.arange(M) % (kernel.MAX_LABEL_SUMS + 1)
    assert "label_sums" not in summarize(X, many)
    parts = [summarize(X[:100], many[:100]), summarize(X[100:], t[100:])]
    assert "label_sums" not in merge_summaries(parts)


@pytest.mark.parametrize("weighted", [False, True], ids=["", "weighted"])
def test_the_first_pass_gives_loss_and_gradient_at_zero_without_another(
    data, samples_first, weighted
):
    """partials_at_zero from the summary's per-label sums = chunk_partials at θ = 0."""
    X, y, t, s, _, _ = data
    s = s if weighted else None
    x = stored(X, samples_first)
    raw = np.where(y == 1, 9, 4)  # binary labels 4 and 9, encoded 0/1
    summary = summarize(X, raw, s, samples_first)
    expected = chunk_partials(x, y, s, np.zeros((1, N + 1)), samples_first=samples_first)
    got = partials_at_zero(summary, np.array([0, 1]), None, 1)
    assert_matches(got["loss"], expected["loss"], 1e-13)
    assert_matches(got["grad"], expected["grad"], 1e-13)
    # multinomial, with class weights
    c = np.array([0.5, 1.0, 2.0, 3.0])
    summary = summarize(X, t + 5, s, samples_first)
    weights = c[t] if s is None else c[t] * s
    expected = chunk_partials(x, t, weights, np.zeros((4, N + 1)), samples_first=samples_first)
    got = partials_at_zero(summary, np.arange(4), c, 4)
    assert_matches(got["loss"], expected["loss"], 1e-13)
    assert_matches(got["grad"], expected["grad"], 1e-13)


BLAS_CHECK = """
from threadpoolctl import threadpool_info
from dlr.linalg import single_threaded_blas

def blas_threads():
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

before = blas_threads()
with single_threaded_blas():
    assert blas_threads() == {1}
    with single_threaded_blas():
        assert blas_threads() == {1}
    assert blas_threads() == {1}
assert blas_threads() == before, (blas_threads(), before)
"""


def test_blas_runs_single_threaded_inside_kernels_and_is_restored_after():
    # In a fresh process: kernels of other tests may still hold the limit in this one.
    subprocess.run([sys.executable, "-c", BLAS_CHECK], check=True)


@pytest.mark.parametrize(
    "y",
    [
        np.array([True, False, True, True]),
        np.array([3, 0, 3, 7], dtype=np.uint8),
        np.array([-2, 5, -2, 9]),
        np.array([70000, 5, 70000, 1]),
        np.array([1.0, 0.0, 4.0, 1.0]),
    ],
    ids=["bool", "uint8", "negative", "large", "float"],
)
def test_summary_finds_the_labels_of_any_dtype(y):
    summary = summarize(np.ones((4, 2)), y)
    labels, counts = np.unique(y, return_counts=True)
    np.testing.assert_array_equal(summary["labels"], labels.astype(np.int64))
    np.testing.assert_array_equal(summary["counts"], counts)
    expected = [np.ones(2) * (y == label).sum() for label in labels]
    np.testing.assert_array_equal(summary["label_sums"], expected)
