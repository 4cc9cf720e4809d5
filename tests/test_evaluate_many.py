"""Several models evaluated in the same passes (dlr.scoring.evaluate_many), and several sources
(dlr.scoring.evaluate_sources): each model's metrics are evaluate's for it alone, bit for bit,
whatever the chunking; each chunk is read once per pass for all of them; the score counts of
the report's ROC curves come from the first pass.

Up to a million samples (dlr.auc.BINS) the AUC is exact in the first pass; the ``few_bins``
fixture makes these small problems need a refinement pass, as ones past that size do."""

import numpy as np
import pytest
import zarr
from sklearn.metrics import confusion_matrix

from dlr import auc, scoring, sources
from dlr.curves import chunk_counts, roc_points
from dlr.dataset import open_dataset
from dlr.decode import read_block
from dlr.numerics import sigmoid
from dlr.sources import from_dataset


def write(path, X: np.ndarray, y: np.ndarray, chunk: int) -> str:
    """X (m, n) and y (m,) as a zarr group of ``chunk``-sample chunks."""
    group = zarr.open_group(str(path), mode="w")
    xa = group.create_array(
        "X", shape=X.shape, chunks=(chunk, X.shape[1]), dtype=X.dtype,
        dimension_names=("sample", "feature"),
    )  # fmt: skip
    ya = group.create_array(
        "y", shape=y.shape, chunks=(chunk,), dtype=y.dtype, dimension_names=("sample",)
    )
    xa[:], ya[:] = X, y
    return str(path)


def problem(n_classes: int, m: int = 3000, n: int = 4, seed: int = 0):
    """Data whose labels depend on the features, and three models: a fair one, a poor one and
    the all-zero one (every score tied)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, n))
    y = rng.integers(0, n_classes, m)
    X[:, 0] += 0.8 * y
    k = 1 if n_classes == 2 else n_classes
    fair = rng.normal(size=(k, n + 1)) * 0.3
    fair[:, 0] += np.arange(k) if k > 1 else 1.5
    thetas = [fair, rng.normal(size=(k, n + 1)) * 0.1, np.zeros((k, n + 1))]
    return X, y, thetas


@pytest.fixture
def few_bins(monkeypatch):
    """AUC histograms of at most 512 entries and a target of 1e-3: a refinement pass needed."""
    monkeypatch.setattr(auc, "BINS", 512)
    monkeypatch.setattr(auc, "TARGET", 1e-3)


@pytest.fixture
def reads(monkeypatch):
    """Every chunk read from a zarr store, as (store path of the array, chunk index)."""
    seen = []

    def counting_read(arr, samples_first, start, stop, origin, chunk, *rest):
        seen.append((str(arr.store_path), chunk))
        return read_block(arr, samples_first, start, stop, origin, chunk, *rest)

    monkeypatch.setattr(sources, "read_block", counting_read)
    return seen


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("chunk", [3000, 701, 64])
def test_each_models_metrics_are_evaluates_bit_for_bit(tmp_path, n_classes, chunk):
    X, y, thetas = problem(n_classes)
    source = from_dataset(open_dataset(write(tmp_path / "d.zarr", X, y, chunk)))
    classes = np.arange(n_classes)
    together = scoring.evaluate_many(source, thetas, classes)
    alone = [scoring.evaluate(source, theta, classes) for theta in thetas]
    assert together == alone  # floats compared exactly
    assert [(m["roc_auc_passes"], m["roc_auc_error_bound"]) for m in together] == [(1, 0.0)] * 3


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("chunk", [3000, 701, 64])
def test_with_refinement_too(tmp_path, n_classes, chunk, few_bins):
    X, y, thetas = problem(n_classes)
    source = from_dataset(open_dataset(write(tmp_path / "d.zarr", X, y, chunk)))
    classes = np.arange(n_classes)
    together = scoring.evaluate_many(source, thetas, classes)
    assert together == [scoring.evaluate(source, theta, classes) for theta in thetas]
    # the tied model is exact in one pass, the others needed a refinement: passes are per model
    assert [m["roc_auc_passes"] for m in together] == [2, 2, 1]
    assert together[2]["roc_auc_error_bound"] == 0.0


@pytest.mark.parametrize("refined", [False, True])
def test_several_sources_in_the_same_passes_are_each_alone_bit_for_bit(
    tmp_path, monkeypatch, refined
):
    if refined:  # the large source needs a refinement pass, the small one does not
        monkeypatch.setattr(auc, "BINS", 512)
        monkeypatch.setattr(auc, "TARGET", 1e-3)
    X, y, thetas = problem(2)
    large = from_dataset(open_dataset(write(tmp_path / "large.zarr", X, y, 700)))
    small = from_dataset(open_dataset(write(tmp_path / "small.zarr", X[:400], y[:400], 128)))
    classes = np.arange(2)
    jobs = [(large, thetas), (small, thetas[:2]), (small, [])]
    together = scoring.evaluate_sources(jobs, classes, curve_bins=20)
    alone = [scoring.evaluate_many(s, t, classes, curve_bins=20) for s, t in jobs]
    assert [[m.pop("score_counts").tolist() for m in ms] for ms in together] == [
        [m.pop("score_counts").tolist() for m in ms] for ms in alone
    ]
    assert together == alone  # floats compared exactly
    assert [[m["roc_auc_passes"] for m in ms] for ms in together] == (
        [[2, 2, 1], [1, 1], []] if refined else [[1, 1, 1], [1, 1], []]
    )


def test_each_chunk_is_read_once_for_all_models(tmp_path, reads):
    X, y, thetas = problem(2)
    source = from_dataset(open_dataset(write(tmp_path / "d.zarr", X, y, 500)))
    metrics = scoring.evaluate_many(source, thetas, np.arange(2))
    assert [m["roc_auc_passes"] for m in metrics] == [1, 1, 1]
    for chunk in range(6):
        for array in ("X", "y"):
            assert sum(1 for r in reads if r[0].endswith(array) and r[1] == chunk) == 1


def test_each_chunk_is_read_once_per_pass_for_all_models(tmp_path, reads, few_bins):
    X, y, thetas = problem(2)
    source = from_dataset(open_dataset(write(tmp_path / "d.zarr", X, y, 500)))
    metrics = scoring.evaluate_many(source, thetas, np.arange(2))
    passes = max(m["roc_auc_passes"] for m in metrics)
    assert passes == 2
    for chunk in range(6):
        for array in ("X", "y"):
            assert sum(1 for r in reads if r[0].endswith(array) and r[1] == chunk) == passes
    # one model alone reads as often as the three together
    reads.clear()
    scoring.evaluate(source, thetas[0], np.arange(2))
    assert len(reads) == 2 * 6 * passes


def test_only_models_whose_bound_needs_it_are_refined(tmp_path, monkeypatch, few_bins):
    X, y, thetas = problem(2)
    source = from_dataset(open_dataset(write(tmp_path / "d.zarr", X, y, 500)))
    histograms = []
    original = auc.chunk_histogram

    def counting(k, positive, partition):
        histograms.append(partition.n_bins)
        return original(k, positive, partition)

    monkeypatch.setattr(auc, "chunk_histogram", counting)
    scoring.evaluate_many(source, [thetas[2], thetas[0]], np.arange(2))
    # first pass: both models in each of the 6 chunks; refinement: the second model only
    assert len(histograms) == 6 * 2 + 6


def test_the_first_pass_counts_the_report_curves_scores(tmp_path):
    X, y, thetas = problem(2, m=1003)
    source = from_dataset(open_dataset(write(tmp_path / "d.zarr", X, y, 100)))
    metrics = scoring.evaluate_many(source, thetas[:2], np.arange(2), curve_bins=20)
    for theta, m in zip(thetas[:2], metrics, strict=True):
        p = sigmoid(X @ theta[0, :-1] + theta[0, -1])
        bins = np.minimum((p * 20).astype(int), 19)
        expected = [np.bincount(bins[y == c], minlength=20) for c in (0, 1)]
        assert m["score_counts"].dtype == np.int64
        np.testing.assert_array_equal(m["score_counts"], expected)
        np.testing.assert_array_equal(chunk_counts(p, y == 1, 20), expected)
        # the ROC through the bin edges is close to the exact AUC, within the binning's ties
        fpr, tpr = roc_points(m["score_counts"])
        assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
        assert abs(np.trapezoid(tpr, fpr) - m["roc_auc"]) < 0.02
        # the rest is evaluate's
        assert {k: v for k, v in m.items() if k != "score_counts"} == scoring.evaluate(
            source, theta, np.arange(2)
        )
    # no curves for more than two classes (a one-vs-rest ROC per class is not drawn)
    X3, y3, thetas3 = problem(3, m=300)
    source3 = from_dataset(open_dataset(write(tmp_path / "d3.zarr", X3, y3, 100)))
    (first, *_) = scoring.evaluate_many(source3, thetas3, np.arange(3), curve_bins=20)
    assert "score_counts" not in first


def test_a_label_the_models_do_not_know_names_its_sample(tmp_path):
    X, y, thetas = problem(2, m=300)
    y[123] = 7
    source = from_dataset(open_dataset(write(tmp_path / "d.zarr", X, y, 100)))
    with pytest.raises(Exception, match="label 7 at sample 123"):
        scoring.evaluate_many(source, thetas, np.arange(2))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_confusion_matrix_and_reliability_table_count_every_sample(tmp_path, n_classes):
    X, y, thetas = problem(n_classes, m=1000)
    source = from_dataset(open_dataset(write(tmp_path / "d.zarr", X, y, 128)))
    metrics = scoring.evaluate_many(source, thetas[:2], np.arange(n_classes))
    for theta, m in zip(thetas[:2], metrics, strict=True):
        z = X @ theta[:, :-1].T + theta[:, -1]
        p = scoring.probabilities(z[:, 0] if n_classes == 2 else z)
        predicted = p.argmax(axis=1)
        assert m["confusion_matrix"] == confusion_matrix(y, predicted).tolist()
        top = p[:, 1] if n_classes == 2 else p.max(axis=1)
        hit = (y == 1) if n_classes == 2 else (predicted == y)
        bins = np.minimum((top * 10).astype(int), 9)
        for b, row in enumerate(m["calibration"]):
            inside = bins == b
            assert row["count"] == inside.sum()
            if inside.any():
                assert row["mean_predicted"] == pytest.approx(top[inside].mean(), rel=1e-12)
                assert row["observed"] == pytest.approx(hit[inside].mean(), rel=1e-12)
