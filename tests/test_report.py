"""The run report: binned score histograms (one pass), report.json and a self-contained HTML."""

import json
import math
import re

import numpy as np

from dlr import scoring
from dlr.curves import roc_points, score_histograms
from dlr.dataset import open_dataset
from dlr.estimator import LogisticRegression
from dlr.gate import decide, parse_gate
from dlr.numerics import sigmoid
from dlr.report import summary, write_report
from dlr.sources import from_dataset
from tests.conftest import load_arrays


def test_score_histograms_count_each_class_per_bin_for_several_models(dataset):
    path = dataset(503, 4, 64)
    source = from_dataset(open_dataset(path))
    a = LogisticRegression(solver="newton").fit(path)
    b = np.zeros((1, 5))
    counts = score_histograms(source, [a.theta_, b], np.array([0, 1]), bins=20)
    X, Y = load_arrays(path)
    y = Y[0] == 1
    for i, theta in enumerate([a.theta_, b]):
        p = sigmoid(theta[0, :-1] @ X + theta[0, -1])
        bins = np.minimum((p * 20).astype(int), 19)
        np.testing.assert_array_equal(counts[i, 0], np.bincount(bins[~y], minlength=20))
        np.testing.assert_array_equal(counts[i, 1], np.bincount(bins[y], minlength=20))
    # the ROC through the bin edges bounds the exact AUC within the ties the binning makes
    fpr, tpr = roc_points(counts[0])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    exact = scoring.evaluate(source, a.theta_, a.classes_)["roc_auc"]
    assert abs(np.trapezoid(tpr, fpr) - exact) < 0.01


def test_score_histograms_are_not_drawn_for_more_than_two_classes(dataset):
    source = from_dataset(open_dataset(dataset(50, 2, 20)))
    assert score_histograms(source, [np.zeros((3, 3))], np.array([0, 1, 2])) is None


def record(metrics, curves):
    gate = parse_gate(["roc_auc>=0.99", "log_loss<=champion+0.5%"])
    candidate = {"pinned": metrics, "fresh": {**metrics, "roc_auc": math.nan}}
    decision = decide(gate, candidate, {"pinned": metrics, "fresh": metrics})
    return {
        "run_key": "20261201T0000Z",
        "registry": "/reg",
        "decision": "rejected",
        "reason": decision.reason,
        "exit_code": 3,
        "version": 2,
        "champion": 1,
        "spans": {"trained": ["a", "b"], "new": ["b"]},
        "metrics": {"candidate": candidate, "champion": {"pinned": metrics, "fresh": metrics}},
        "checks": [c._asdict() for c in decision.checks],
        "drift": {
            "reference_samples": 10,
            "new_samples": 5,
            "bins": 10,
            "features": [
                {
                    "name": "x<0>",
                    "smd": math.inf,
                    "psi": 0.3,
                    "reference_mean": 0.0,
                    "new_mean": 1.0,
                    "reference_std": 0.0,
                    "new_std": 0.0,
                }
            ],
            "label_rates": {"reference": {"0": 0.5, "1": 0.5}, "new": {"0": 0.4, "1": 0.6}},
            "smd": math.inf,
            "psi": 0.3,
            "label_shift": 0.1,
        },
        "training": {"solver": "newton", "n_iter": 3, "n_passes": 5, "loss_history": [3, 2, 1]},
        "curves": {"pinned": {"candidate": curves, "champion": curves}},
        "timings": {"train": 1.5},
    }


def test_the_report_is_strict_json_and_a_self_contained_page(dataset, tmp_path):
    path = dataset(203, 3, 50)
    source = from_dataset(open_dataset(path))
    model = LogisticRegression(solver="newton").fit(path)
    metrics = scoring.evaluate(source, model.theta_, model.classes_)
    curves = score_histograms(source, [model.theta_], model.classes_)[0]
    rec = record(metrics, curves)
    run = tmp_path / "runs" / "20261201T0000Z"
    write_report(str(run), rec)
    doc = json.loads((run / "report.json").read_text())  # NaN and inf became null
    assert doc["metrics"]["candidate"]["fresh"]["roc_auc"] is None
    assert doc["drift"]["smd"] is None
    page = (run / "report.html").read_text()
    assert page.count("<svg") == 4  # loss, metrics, ROC, calibration
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page)
    assert "Decision: rejected" in page
    assert "roc_auc&gt;=0.99 failed on the fresh holdout: the metric is NaN" in page
    assert "x&lt;0&gt;" in page  # feature names are escaped
    assert sorted(p.name for p in run.iterdir()) == ["report.html", "report.json"]
    text = summary(doc)
    assert text.splitlines()[0].startswith(
        "run 20261201T0000Z: version 2 rejected (champion was 1)"
    )
    assert "drift: max PSI 0.3" in text
    assert "<h1>dlr retrain 20261201T0000Z</h1>" in page
