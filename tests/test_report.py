"""The run report: report.json and a self-contained HTML (the binned score histograms it draws
its ROC curves from are tested with dlr.scoring.evaluate_many)."""

import json
import math
import re
import subprocess
import sys

from dlr import scoring
from dlr.dataset import open_dataset
from dlr.estimator import LogisticRegression
from dlr.gate import decide, parse_gate
from dlr.registry import Registry
from dlr.report import jsonable, report_files, summary
from dlr.sources import from_dataset
from dlr.svg import bar_panel, line_panel


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
    (metrics,) = scoring.evaluate_many(source, [model.theta_], model.classes_, curve_bins=200)
    curves = metrics.pop("score_counts")
    rec = record(metrics, curves)
    registry = Registry.create_or_open(str(tmp_path))
    for name, data in report_files(rec).items():
        registry.save_run_file("20261201T0000Z", name, data)  # as dlr retrain writes them
    run = tmp_path / "runs" / "20261201T0000Z"
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
    ll, auc = metrics["log_loss"], metrics["roc_auc"]
    assert f"  pinned holdout (203 samples): log_loss {ll:.6g} (champion {ll:.6g}), roc_auc " \
           f"{auc:.6g} (champion {auc:.6g})" in text.splitlines()  # fmt: skip
    assert (
        f"  fresh holdout (203 samples): log_loss {ll:.6g} (champion {ll:.6g}), roc_auc – "
        f"(champion {auc:.6g})" in text.splitlines()
    )  # a NaN metric is shown as –
    assert "<h1>dlr retrain 20261201T0000Z</h1>" in page
    assert "<thead><tr><th>train</th></tr></thead><tbody><tr><td>1.5</td>" in page  # timings
    assert "<tr><td>x&lt;0&gt;</td><td>–</td><td>0.3</td><td>0</td><td>1</td>" in page  # drift
    assert "<tr><td>1</td><td>0.5</td><td>0.6</td></tr>" in page  # the label rates


def test_the_figures_need_no_plotting_library(dataset, tmp_path):
    path = dataset(203, 3, 50)
    source = from_dataset(open_dataset(path))
    model = LogisticRegression(solver="newton").fit(path)
    (metrics,) = scoring.evaluate_many(source, [model.theta_], model.classes_, curve_bins=200)
    rec = jsonable(record(metrics, metrics.pop("score_counts")))
    code = (
        "import json, sys; sys.modules['matplotlib'] = None\n"  # import matplotlib now fails
        "from dlr.report import render_html\n"
        f"print(render_html(json.load(open({str(tmp_path / 'rec.json')!r}))))"
    )
    (tmp_path / "rec.json").write_text(json.dumps(rec))
    page = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 4  # loss, metrics, ROC, calibration
    roc = svgs[2]
    assert roc.count("<polyline") == 2  # both models' ROC curves on the pinned holdout
    assert not any("nan" in svg.lower() for svg in svgs)  # a NaN metric is a missing bar


def test_a_panel_leaves_out_values_that_are_not_finite():
    panel = bar_panel(["a", "b"], [("m", [0.5, math.nan]), ("n", [None, 0.25])], title="t")
    assert panel.count("<rect") == 1 + 2 + 2  # the frame, two bars, two legend swatches
    lines = line_panel([("m", [0, 1, 2], [1.0, math.inf, 3.0])], title="t", xlabel="x", ylabel="y")
    assert lines.count("<polyline") == 1 and "inf" not in lines
