"""The report of a retraining run: ``report.json``, a self-contained ``report.html`` and a summary.

The HTML page has no external references: its figures (loss curve, champion vs candidate
metrics, ROC and calibration curves — all drawn from binned summaries, never per-sample data)
are inline SVG drawn by :mod:`dlr.svg` (no plotting library needed). The run
record it renders is built by :mod:`dlr.retrain`::

    {"run_key", "registry", "decision", "reason", "exit_code", "version", "champion",
     "spans": {"trained": [ids], "new": [ids]},
     "metrics": {"candidate": {"pinned": m, "fresh": m | None}, "champion": {...} | None},
     "checks": [{"threshold", "holdout", "value", "bound", "passed", "note"}],
     "drift": dlr.drift.drift(...) | None,
     "training": {"solver", "n_iter", "n_passes", "converged", "loss_history", "warm_start"},
     "curves": {"pinned" | "fresh": {"candidate": (2, bins) counts, "champion": ...}},
     "timings": {stage: seconds}, "dlr_version", "started_at", "finished_at"}

``m`` are the metrics of :func:`dlr.scoring.evaluate`.
"""

import html
import math

import numpy as np

from dlr import serial
from dlr.curves import BINS, roc_points
from dlr.svg import bar_panel, figure, line_panel

HOLDOUTS = ("pinned", "fresh")
METRICS = ("log_loss", "roc_auc", "accuracy")


def jsonable(value):
    """``value`` with NumPy types made plain and non-finite floats made None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if all(type(v) is int for v in value):  # counts, curves: nothing to change
            return list(value)
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iub" or (value.dtype.kind == "f" and np.isfinite(value).all()):
            return value.tolist()  # plain ints, bools and finite floats
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def report_files(record: dict) -> dict[str, bytes]:
    """{"report.json": ..., "report.html": ...}: the report of ``record``, encoded."""
    doc = jsonable(record)
    return {
        "report.json": serial.json_bytes(doc),  # as run.json: the finished record's bytes
        "report.html": render_html(doc).encode("utf-8"),
    }


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def summary(record: dict) -> str:
    """A few lines for the terminal: decision, reason, metrics side by side, drift, where."""
    lines = [
        f"run {record['run_key']}: version {record.get('version')} {record['decision']} "
        f"(champion was {_fmt(record.get('champion'))}) — {record['reason']}"
    ]
    metrics = record.get("metrics") or {}
    champion = metrics.get("champion") or {}
    for holdout in HOLDOUTS:
        cand = (metrics.get("candidate") or {}).get(holdout)
        if cand is None:
            continue
        champ = champion.get(holdout) or {}
        parts = [
            f"{k} {_fmt(cand.get(k))}" + (f" (champion {_fmt(champ.get(k))})" if champ else "")
            for k in ("log_loss", "roc_auc")
        ]
        lines.append(f"  {holdout} holdout ({cand['n_samples']} samples): " + ", ".join(parts))
    drift = record.get("drift")
    if drift:
        lines.append(
            f"  drift: max PSI {_fmt(drift['psi'])}, max |SMD| {_fmt(drift['smd'])}, "
            f"label shift {_fmt(drift['label_shift'])}"
        )
    return "\n".join(lines)


# --- HTML -----------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figures(record: dict) -> list[tuple[str, str]]:
    """(title, inline SVG) of each figure (see :mod:`dlr.svg`)."""
    figures = []
    losses = (record.get("training") or {}).get("loss_history") or []
    if losses:
        loss = line_panel(
            [("candidate", list(range(len(losses))), losses)],
            title="loss curve",
            xlabel="iteration",
            ylabel="training objective",
            markers=True,
        )
        figures.append(("Loss curve", figure([loss])))
    metrics = record.get("metrics") or {}
    models = [m for m in ("champion", "candidate") if metrics.get(m)]
    bars = [
        bar_panel(
            list(HOLDOUTS),
            [(m, [(metrics[m].get(h) or {}).get(metric) for h in HOLDOUTS]) for m in models],
            title=metric,
        )
        for metric in METRICS
    ]
    figures.append(("Champion vs candidate", figure(bars)))
    curves = record.get("curves") or {}
    roc = []
    for holdout in HOLDOUTS:
        lines = []
        for model, counts in (curves.get(holdout) or {}).items():
            fpr, tpr = roc_points(np.asarray(counts))
            lines.append((model, fpr.tolist(), tpr.tolist()))
        roc.append(
            _unit_square(lines, f"ROC, {holdout}", "false positive rate", "true positive rate")
        )
    figures.append((f"ROC curves (from {BINS} score bins)", figure(roc)))
    calibration = []
    for holdout in HOLDOUTS:
        lines = []
        for model in models:
            table = (metrics[model].get(holdout) or {}).get("calibration") or []
            rows = [r for r in table if r["count"]]
            lines.append(
                (model, [r["mean_predicted"] for r in rows], [r["observed"] for r in rows])
            )
        calibration.append(
            _unit_square(
                lines, f"calibration, {holdout}", "mean predicted", "observed", markers=True
            )
        )
    figures.append(("Calibration (10 bins)", figure(calibration)))
    return figures


def _unit_square(lines, title: str, xlabel: str, ylabel: str, markers: bool = False) -> str:
    """A line panel on [0, 1]² with the y = x diagonal (ROC and calibration curves)."""
    return line_panel(
        lines,
        title=title,
        xlabel=xlabel,
        ylabel=ylabel,
        xlim=(0.0, 1.0),
        ylim=(0.0, 1.0),
        diagonal=True,
        markers=markers,
    )


STYLE = (
    "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;"
    "text-align:right}th{background:#f3f3f3}.promoted{color:#080}.rejected{color:#b00}"
    ".challenger{color:#a60}"
)


def render_html(record: dict) -> str:
    """The whole page as one string (no external resources)."""
    esc = html.escape
    decision = record["decision"]
    parts = [
        f"<h1>dlr retrain {esc(str(record['run_key']))}</h1>",
        f"<p>Registry <code>{esc(str(record.get('registry')))}</code>; candidate version "
        f"{esc(_fmt(record.get('version')))}, champion evaluated against: "
        f"{esc(_fmt(record.get('champion')))}.</p>",
        f"<h2 class='{esc(decision)}'>Decision: {esc(decision)}</h2>",
        f"<p>{esc(record['reason'])}</p>",
    ]
    checks = record.get("checks") or []
    if checks:
        parts.append("<h2>Gate</h2>")
        parts.append(
            _table(
                ["threshold", "holdout", "value", "bound", "passed", "note"],
                [
                    [c["threshold"], c["holdout"], c["value"], c["bound"], c["passed"], c["note"]]
                    for c in checks
                ],
            )
        )
    metrics = record.get("metrics") or {}
    rows = []
    for model in ("champion", "candidate"):
        for holdout in HOLDOUTS:
            m = (metrics.get(model) or {}).get(holdout)
            if m:
                rows.append([model, holdout, m.get("n_samples"), *(m.get(k) for k in METRICS)])
    parts += ["<h2>Metrics</h2>", _table(["model", "holdout", "samples", *METRICS], rows)]
    for title, svg in _figures(record):
        parts += [f"<h2>{esc(title)}</h2>", svg]
    drift = record.get("drift")
    parts.append("<h2>Drift of the new spans against the training set</h2>")
    if drift:
        parts.append(
            f"<p>{drift['new_samples']} new samples against the "
            f"{drift['reference_samples']} of the older spans; PSI over the registry's "
            f"{drift['bins']} bins per feature (equal-width over the range of its first "
            "ingest, fixed then).</p>"
        )
        parts.append(
            _table(
                ["feature", "SMD", "PSI", "mean (ref)", "mean (new)", "std (ref)", "std (new)"],
                [
                    [
                        f["name"],
                        f["smd"],
                        f["psi"],
                        f["reference_mean"],
                        f["new_mean"],
                        f["reference_std"],
                        f["new_std"],
                    ]
                    for f in drift["features"]
                ],
            )
        )
        rates = drift["label_rates"]
        parts.append(
            _table(
                ["class", "rate (ref)", "rate (new)"],
                [[k, rates["reference"][k], rates["new"][k]] for k in rates["new"]],
            )
        )
    else:
        parts.append("<p>No reference (first version): no drift computed.</p>")
    training = record.get("training") or {}
    if training:
        parts.append("<h2>Training</h2>")
        keys = ("solver", "warm_start", "n_iter", "n_passes", "converged")
        parts.append(_table(list(keys), [[training.get(k) for k in keys]]))
    timings = record.get("timings") or {}
    if timings:
        parts += ["<h2>Timings (s)</h2>", _table(list(timings), [list(timings.values())])]
    spans = record.get("spans") or {}
    if spans:
        parts.append(
            f"<p>Trained on {len(spans.get('trained', []))} spans, "
            f"{len(spans.get('new', []))} new: {esc(', '.join(spans.get('new', [])))}</p>"
        )
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>dlr retrain {esc(str(record['run_key']))}</title><style>{STYLE}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )
