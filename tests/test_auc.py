"""ROC AUC from per-chunk histograms (dlr.auc): within its stated error bound of scikit-learn's
exact roc_auc_score, the bound at most 1e-6, for continuous scores, ties, constant scores, rare
positives; exact in one pass up to dlr.auc.BINS samples; past that, histograms kept within BINS
entries and refined; and ``evaluate`` on zarr data, binary and multiclass (one-vs-rest, macro)."""

import numpy as np
import pytest
import zarr
from sklearn.metrics import log_loss, roc_auc_score

import dlr
from dlr import auc, scoring
from dlr.dataset import open_dataset
from dlr.sources import from_arrays, from_dataset
from dlr.synthetic import make_dataset


def chunked_auc(scores: np.ndarray, positive: np.ndarray, n_chunks: int = 7):
    """The passes evaluate makes, over ``n_chunks`` chunks: (auc, bound, passes)."""
    chunks = list(
        zip(
            np.array_split(auc.keys(scores), n_chunks),
            np.array_split(positive, n_chunks),
            strict=True,
        )
    )
    partition, passes = auc.Partition.initial(), 0
    while True:
        passes += 1
        histogram = auc.merge(*(auc.chunk_histogram(k, p, partition) for k, p in chunks))
        value, bound = auc.auc_and_bound(histogram)
        if bound <= auc.TARGET or passes == auc.MAX_PASSES:
            return value, bound, passes
        partition = auc.refine(histogram)


def case(name: str, m: int = 200_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=m)
    if name == "continuous":
        return z, rng.random(m) < 1 / (1 + np.exp(-2 * z))
    if name == "rare-positives":
        return z, rng.random(m) < 1 / (1 + np.exp(-(2 * z - 6)))
    if name == "ties":
        return np.round(z, 1), rng.random(m) < 0.3
    if name == "constant":
        return np.full(m, 0.25), rng.random(m) < 0.5
    if name == "signed-zeros":
        return np.where(rng.random(m) < 0.5, -0.0, 0.0), rng.random(m) < 0.5
    if name == "huge-range":
        return z * 10.0 ** rng.integers(-300, 300, m), rng.random(m) < 0.5
    raise ValueError(name)


CASES = ["continuous", "rare-positives", "ties", "constant", "signed-zeros", "huge-range"]


@pytest.fixture
def few_bins(monkeypatch):
    """Histograms of at most 4096 entries and a target of 1e-4: the regime of more samples
    than dlr.auc.BINS (a million) and a 1e-6 target, at a test's size."""
    monkeypatch.setattr(auc, "BINS", 4096)
    monkeypatch.setattr(auc, "TARGET", 1e-4)


def test_keys_order_scores_as_floats_do_and_bins_never_decrease_with_the_key():
    rng = np.random.default_rng(3)
    special = [-np.inf, -1e308, -1.0, -5e-324, -0.0, 0.0, 5e-324, 1e-300, 1.0, 1e308, np.inf]
    scores = np.concatenate([special, rng.normal(size=5000) * 10.0 ** rng.integers(-300, 300)])
    k = auc.keys(scores)
    order = np.argsort(scores, kind="stable")
    assert np.all(np.diff(k[order].astype(object)) >= 0)  # as uint64, no wrap-around
    assert (np.diff(k[order]) == 0).sum() == 1  # only −0.0 and 0.0 share a key
    coarse = auc.Partition.initial()
    fine = auc.refine(auc.merge(auc.chunk_histogram(k, rng.random(k.size) < 0.5, coarse)))
    for partition in (coarse, fine):
        assert np.all(np.diff(partition.bins(np.sort(k))) >= 0)


@pytest.mark.parametrize("name", CASES)
def test_up_to_bins_samples_the_first_pass_is_exact(name):
    scores, positive = case(name)
    value, bound, passes = chunked_auc(scores, positive)
    assert (bound, passes) == (0.0, 1)  # every bin holds one distinct score
    assert abs(value - roc_auc_score(positive, scores)) <= 1e-15


@pytest.mark.parametrize("name", ["continuous", "ties", "constant"])
def test_the_exact_auc_is_the_same_whatever_number_of_positives_is_searched_at_once(
    name, monkeypatch
):
    scores, positive = case(name, m=20_000)
    values = set()
    for block in (1, 7, 4096, 1 << 30):
        monkeypatch.setattr(auc, "SEARCH_BLOCK", block)
        value, bound, _ = chunked_auc(scores, positive)
        values.add(value)
    assert len(values) == 1 and bound == 0.0
    assert abs(values.pop() - roc_auc_score(positive, scores)) <= 1e-15


@pytest.mark.parametrize("n_chunks", [7, 101])  # chunks above the limit, and below it
@pytest.mark.parametrize("name", CASES)
def test_past_bins_samples_within_the_stated_bound_of_scikit_learn(name, n_chunks, few_bins):
    scores, positive = case(name)
    value, bound, passes = chunked_auc(scores, positive, n_chunks)
    assert bound <= auc.TARGET
    assert abs(value - roc_auc_score(positive, scores)) <= bound + 1e-15
    if name in ("ties", "constant", "signed-zeros"):
        assert (bound, passes) == (0.0, 1)  # bins of one score each: exact in the first pass


def test_a_merged_histogram_keeps_at_most_bins_entries(few_bins):
    scores, positive = case("continuous")
    chunks = zip(np.array_split(auc.keys(scores), 7), np.array_split(positive, 7), strict=True)
    parts = [auc.chunk_histogram(k, p, auc.Partition.initial()) for k, p in chunks]
    assert all(part.bins.size <= 4096 for part in parts)
    merged = auc.merge(*parts)
    assert merged.bins.size <= 4096 and merged.shift > 0
    assert (merged.pos.sum(), merged.neg.sum()) == (positive.sum(), (~positive).sum())
    assert (merged.lo[1:] > merged.hi[:-1]).all()  # joined bins stay disjoint, in key order


def test_the_bound_is_computed_from_the_counts_not_assumed(few_bins):
    # More samples than a histogram keeps: the first pass joins neighbouring bins and is far
    # from the target; its bound must still hold, and the refinement must bring it down.
    scores, positive = case("continuous")
    histogram = auc.merge(auc.chunk_histogram(auc.keys(scores), positive, auc.Partition.initial()))
    value, bound = auc.auc_and_bound(histogram)
    assert bound > 2 * auc.TARGET
    assert abs(value - roc_auc_score(positive, scores)) <= bound
    assert chunked_auc(scores, positive)[2] == 2


def test_chunks_within_the_limit_are_kept_as_sorted_keys_until_their_merge_would_pass_it(
    few_bins,
):
    scores, positive = case("continuous", m=20_000)
    parts = [
        auc.chunk_histogram(k, p, auc.Partition.initial())
        for k, p in zip(
            np.array_split(auc.keys(scores), 10), np.array_split(positive, 10), strict=True
        )
    ]
    assert all(isinstance(part, auc.SortedKeys) for part in parts)  # 2,000 samples each
    two = auc.merge(*parts[:2])
    assert isinstance(two, auc.SortedKeys)
    assert np.array_equal(two.pos, np.sort(auc.keys(scores[:4000])[positive[:4000]]))
    value, bound = auc.auc_and_bound(two)
    assert bound == 0.0 and abs(value - roc_auc_score(positive[:4000], scores[:4000])) <= 1e-15
    everything = auc.merge(*parts)  # 20,000 samples: a histogram of at most 4,096 entries
    assert isinstance(everything, auc.Histogram) and everything.bins.size <= 4096
    assert (everything.pos.sum(), everything.neg.sum()) == (positive.sum(), (~positive).sum())


def test_one_class_only_has_no_auc():
    value, bound = auc.auc_and_bound(
        auc.chunk_histogram(auc.keys(np.arange(5.0)), np.ones(5, bool), auc.Partition.initial())
    )
    assert np.isnan(value) and bound == 0.0


@pytest.mark.parametrize("bins", ["default", "few"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_evaluate_matches_scikit_learn_within_its_bound(tmp_path, n_classes, bins, request):
    if bins == "few":
        request.getfixturevalue("few_bins")
    rng = np.random.default_rng(n_classes)
    m = 60_000
    X = rng.normal(size=(m, 5)).astype(np.float32)
    y = rng.integers(0, n_classes, m)
    X[:, 0] += 0.4 * y
    model = dlr.LogisticRegression().fit(X[:2000], y[:2000])
    metrics = scoring.evaluate(from_arrays(X, y), model.theta_, model.classes_)
    if n_classes == 2:
        expected = roc_auc_score(y, model.decision_function(X))
    else:
        expected = roc_auc_score(y, model.predict_proba(X), multi_class="ovr", average="macro")
    if bins == "default":  # 60,000 samples: exact in one pass
        assert (metrics["roc_auc_error_bound"], metrics["roc_auc_passes"]) == (0.0, 1)
        assert abs(metrics["roc_auc"] - expected) <= 1e-14
    else:
        assert 0 < metrics["roc_auc_error_bound"] <= auc.TARGET
        assert abs(metrics["roc_auc"] - expected) <= metrics["roc_auc_error_bound"]
        assert metrics["roc_auc_passes"] == 2
    assert metrics["log_loss"] == pytest.approx(log_loss(y, model.predict_proba(X)), rel=1e-12)


def test_evaluate_on_zarr_chunks_with_few_distinct_scores_is_exact(tmp_path):
    path = str(tmp_path / "data.zarr")
    make_dataset(path, 5000, 3, chunk_samples=700, seed=2)
    source = from_dataset(open_dataset(path))
    model = dlr.LogisticRegression().fit(path)
    metrics = scoring.evaluate(source, model.theta_, model.classes_)
    X, y = open_dataset(path).x[:], open_dataset(path).y[:]
    assert metrics["roc_auc"] == pytest.approx(
        roc_auc_score(y, model.decision_function(X)), abs=metrics["roc_auc_error_bound"] + 1e-15
    )
    assert (metrics["roc_auc_passes"], metrics["roc_auc_error_bound"]) == (1, 0.0)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_the_exact_auc_is_the_same_however_chunks_are_grouped_to_count_their_positives(
    tmp_path, n_classes, monkeypatch
):
    rng = np.random.default_rng(7)
    m = 5000  # chunks of 700: seven whole and a ragged last one
    X = np.round(rng.normal(size=(m, 3)), 1)  # few distinct scores: ties across chunks
    y = rng.integers(0, n_classes, m)
    X[:, 0] += 0.5 * y
    group = zarr.open_group(str(tmp_path / "ties.zarr"), mode="w")
    group.create_array("X", data=X, chunks=(700, 3))
    group.create_array("y", data=y, chunks=(700,))
    source = from_dataset(open_dataset(str(tmp_path / "ties.zarr")))
    assert source.n_chunks == 8
    model = dlr.LogisticRegression().fit(X, y)
    if n_classes == 2:
        expected = roc_auc_score(y, model.decision_function(X))
    else:
        expected = roc_auc_score(y, model.predict_proba(X), multi_class="ovr", average="macro")
    values = set()
    for fan_in in (1, 3, 100):
        monkeypatch.setattr(scoring, "COUNT_FAN_IN", fan_in)
        metrics = scoring.evaluate(source, model.theta_, model.classes_)
        assert (metrics["roc_auc_passes"], metrics["roc_auc_error_bound"]) == (1, 0.0)
        values.add(metrics["roc_auc"])
    assert len(values) == 1
    assert abs(values.pop() - expected) <= 1e-14
