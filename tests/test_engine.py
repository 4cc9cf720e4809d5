"""Training out-of-core gives what the in-memory NumPy oracle gives, on every chunking."""

import numpy as np
import pytest

import dlr
from dlr import kernel, oracle, sources
from dlr.dataset import open_dataset
from dlr.decode import read_block
from dlr.engine import Engine, Labels
from dlr.sources import from_dataset
from tests.conftest import RTOL_FLOAT64, assert_matches, load_arrays

ITERATIONS = 60
LEARNING_RATE = 1.0
#: (samples, samples per chunk); one-sample chunks use fewer samples to keep the test quick.
CHUNKINGS = {"one-chunk": (203, 203), "ragged-last-chunk": (203, 50), "one-sample-chunks": (41, 1)}


def fit_both(path, **params):
    model = dlr.LogisticRegression(
        solver="gd", C=np.inf, learning_rate=LEARNING_RATE, max_iter=ITERATIONS, tol=0, **params
    ).fit(path)
    X, Y = load_arrays(path)
    return model, X, Y


@pytest.mark.parametrize("cache_size", ["auto", 0], ids=["cached", "streamed"])
@pytest.mark.parametrize("samples_first", [True, False], ids=["samples-first", "features-first"])
@pytest.mark.parametrize("chunking", CHUNKINGS.values(), ids=CHUNKINGS.keys())
def test_float64_training_matches_the_oracle(dataset, chunking, samples_first, cache_size):
    n_samples, chunk_samples = chunking
    path = dataset(n_samples, 5, chunk_samples, samples_first=samples_first)
    model, X, Y = fit_both(path, cache_size=cache_size)
    ref = oracle.gradient_descent(X, Y, LEARNING_RATE, ITERATIONS)
    assert model.n_iter_ == ITERATIONS == len(model.loss_history_) - 1
    assert_matches(model.coef_[0], ref.w[:, 0])
    assert_matches(model.intercept_, [ref.b])
    assert_matches(model.loss_history_, ref.losses)


def test_many_cache_blocks_per_chunk_match_the_oracle(dataset, monkeypatch):
    monkeypatch.setattr(kernel, "MIN_BLOCK_SAMPLES", 7)
    monkeypatch.setattr(kernel, "BLOCK_BYTES", 0)
    path = dataset(203, 5, 100)
    model, X, Y = fit_both(path, cache_size=0)
    ref = oracle.gradient_descent(X, Y, LEARNING_RATE, ITERATIONS)
    assert_matches(model.coef_[0], ref.w[:, 0])
    assert_matches(model.loss_history_, ref.losses)


@pytest.mark.parametrize("samples_first", [True, False], ids=["samples-first", "features-first"])
def test_float32_data_is_trained_exactly_in_float64(dataset, samples_first):
    """float32 samples are upcast exactly and every sum is float64, so dlr on float32 data equals
    the float64 oracle on the same (upcast) values to the float64 tolerance. The float32 oracle,
    whose own sums round at 2^-24, differs from both by float32 rounding only (1e-5 here)."""
    path = dataset(203, 5, 50, samples_first=samples_first, dtype="float32")
    model, X32, Y32 = fit_both(path)
    ref64 = oracle.gradient_descent(
        X32.astype(np.float64), Y32.astype(np.float64), LEARNING_RATE, ITERATIONS
    )
    assert_matches(model.coef_[0], ref64.w[:, 0], RTOL_FLOAT64)
    assert_matches(model.loss_history_, ref64.losses, RTOL_FLOAT64)
    ref32 = oracle.gradient_descent(X32, Y32, LEARNING_RATE, ITERATIONS)
    assert ref32.w.dtype == np.float32
    assert_matches(model.coef_[0], ref32.w[:, 0], 1e-5)


def test_tol_stops_training_where_the_oracle_stops(dataset):
    path = dataset(500, 4, 64)
    model = dlr.LogisticRegression(
        solver="gd", C=np.inf, learning_rate=LEARNING_RATE, max_iter=1000, tol=1e-5
    ).fit(path)
    X, Y = load_arrays(path)
    ref = oracle.gradient_descent(X, Y, LEARNING_RATE, 1000, tol=1e-5)
    assert model.converged_
    assert model.n_iter_ == len(ref.losses) - 1 < 1000
    assert_matches(model.loss_history_, ref.losses)


@pytest.fixture
def reads(monkeypatch):
    """Every chunk read from a zarr store, as (array, chunk index), in order."""
    seen = []

    def counting_read(arr, samples_first, start, stop, origin, chunk, *rest):
        seen.append((arr.path, chunk))
        return read_block(arr, samples_first, start, stop, origin, chunk, *rest)

    monkeypatch.setattr(sources, "read_block", counting_read)
    return seen


def test_each_evaluation_is_one_pass_and_only_cached_chunks_are_read_once(dataset, reads):
    """Count chunk reads: streamed chunks are read once per pass, cached ones once in total."""
    path = dataset(203, 5, 50)
    source = from_dataset(open_dataset(path))
    budget = 2 * source.chunk_nbytes(0)  # the first two chunks fit
    engine = Engine(source, cache_size=budget)
    assert sorted(reads) == [("X", 0), ("X", 1), ("y", 0), ("y", 1)]
    engine.summarize()
    for hessian in (False, True, False):
        engine.partials(np.full((1, 6), 0.1), Labels(np.array([0, 1])), hessian=hessian)
    assert sorted(reads[4:]) == sorted([(a, i) for a in ("X", "y") for i in (2, 3, 4)] * 4)
    assert engine.n_passes == 4


def test_loss_and_gradient_at_zero_come_from_the_first_pass_without_reading(dataset, reads):
    path = dataset(203, 5, 50)
    labels = Labels(np.array([0, 1]))
    engine = Engine(from_dataset(open_dataset(path)), cache_size=0)
    engine.summarize()
    read, passes = len(reads), engine.n_passes
    zero = engine.partials(np.zeros((1, 6)), labels)
    assert (len(reads), engine.n_passes) == (read, passes)
    fresh = Engine(from_dataset(open_dataset(path)), cache_size=0)  # not summarized: a real pass
    assert fresh.summary is None
    computed = fresh.partials(np.zeros((1, 6)), labels)
    assert len(reads) > read
    assert_matches(zero["loss"], computed["loss"], 1e-13)
    assert_matches(zero["grad"], computed["grad"], 1e-13)


@pytest.mark.parametrize("solver", ["gd", "newton", "lbfgs"])
def test_every_solver_reads_each_streamed_chunk_once_per_reported_pass(dataset, reads, solver):
    path = dataset(203, 5, 50)
    model = dlr.LogisticRegression(
        solver=solver, max_iter=8, tol=0, cache_size=0, line_search=True, learning_rate=5.0
    ).fit(path)
    assert model.n_passes_ >= model.n_iter_ + 1
    for array in ("X", "y"):
        for chunk in range(5):
            assert reads.count((array, chunk)) == model.n_passes_


def test_streaming_with_cache_size_zero_keeps_nothing(dataset):
    model = dlr.LogisticRegression(max_iter=2, tol=0, cache_size=0).fit(dataset(203, 5, 50))
    assert model.cached_bytes_ == 0
    model = dlr.LogisticRegression(max_iter=2, tol=0, cache_size="1GB").fit(dataset(203, 5, 50))
    assert model.cached_bytes_ == 203 * (5 * 8 + 16)
