"""The report of a retraining run: ``report.json``, a self-contained ``report.html`` and a summary.

The HTML page has no external references: its figures (loss curve, champion vs candidate
metrics, ROC and calibration curves — all drawn from binned summaries, never per-sample data)
are inline SVG drawn by matplotlib; without matplotlib the page holds the tables only. The run
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
import io
import json
import math
import os

import fsspec
import numpy as np

from dlr.atomic import is_local, local_path, staged
from dlr.curves import roc_points

HOLDOUTS = ("pinned", "fresh")
#: Fixed figure margins (tight_layout costs more than drawing these small figures).
MARGINS = {"left": 0.1, "right": 0.97, "bottom": 0.16, "top": 0.88, "wspace": 0.35}
METRICS = ("log_loss", "roc_auc", "accuracy")


def jsonable(value):
    """``value`` with NumPy types made plain and non-finite floats made None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_text(url: str, text: str, storage_options: dict | None = None) -> None:
    """Write one file atomically: temporary name, fsync, rename locally; one PUT on a store."""
    if is_local(url):
        with staged(local_path(url), overwrite=True) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
        return
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    fs.pipe_file(path, text.encode("utf-8"))


def report_files(record: dict) -> dict[str, bytes]:
    """{"report.json": ..., "report.html": ...}: the report of ``record``, encoded."""
    doc = jsonable(record)
    return {
        "report.json": (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode(),
        "report.html": render_html(doc).encode("utf-8"),
    }


def write_report(run_url: str, record: dict, storage_options: dict | None = None) -> None:
    """Write ``report.json`` and ``report.html`` of ``record`` into the run directory (a run
    of a registry writes them through it instead: :meth:`dlr.registry.Registry.save_run_file`)."""
    if is_local(run_url):
        os.makedirs(local_path(run_url), exist_ok=True)
    for name, data in report_files(record).items():
        write_text(f"{run_url}/{name}", data.decode("utf-8"), storage_options)


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


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figures(record: dict) -> list[tuple[str, str]]:
    """(title, inline SVG) of each figure; empty without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    losses = (record.get("training") or {}).get("loss_history") or []
    if losses:
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
        ax.plot(range(len(losses)), losses, marker=".")
        ax.set(xlabel="iteration", ylabel="training objective", title="loss curve")
        ax.grid(alpha=0.3)
        fig.subplots_adjust(**MARGINS)
        figures.append(("Loss curve", _svg(fig)))
    metrics = record.get("metrics") or {}
    models = [m for m in ("champion", "candidate") if metrics.get(m)]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(9, 3), dpi=100)
    for ax, metric in zip(axes, METRICS, strict=True):
        for i, model in enumerate(models):
            values = [(metrics[model].get(h) or {}).get(metric) for h in HOLDOUTS]
            values = [np.nan if v is None else v for v in values]
            ax.bar(np.arange(2) + (i - 0.5 * (len(models) - 1)) * 0.38, values, 0.36, label=model)
        ax.set_xticks(range(2), HOLDOUTS)
        ax.set_title(metric)
    axes[0].legend(fontsize="small")
    fig.subplots_adjust(**MARGINS)
    figures.append(("Champion vs candidate", _svg(fig)))
    curves = record.get("curves") or {}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    for ax, holdout in zip(axes, HOLDOUTS, strict=True):
        for model, counts in (curves.get(holdout) or {}).items():
            fpr, tpr = roc_points(np.asarray(counts))
            ax.plot(fpr, tpr, label=model)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, {holdout}")
        if curves.get(holdout):
            ax.legend(fontsize="small")
    fig.subplots_adjust(**MARGINS)
    figures.append(("ROC curves (from 200 score bins)", _svg(fig)))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    for ax, holdout in zip(axes, HOLDOUTS, strict=True):
        for model in models:
            table = (metrics[model].get(holdout) or {}).get("calibration") or []
            rows = [r for r in table if r["count"]]
            ax.plot(
                [r["mean_predicted"] for r in rows],
                [r["observed"] for r in rows],
                "o-",
                label=model,
            )
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax.set(xlabel="mean predicted", ylabel="observed", title=f"calibration, {holdout}")
        ax.legend(fontsize="small")
    fig.subplots_adjust(**MARGINS)
    figures.append(("Calibration (10 bins)", _svg(fig)))
    return figures


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
            f"<p>{drift['new_samples']} new samples against {drift['reference_samples']}; "
            f"PSI over {drift['bins']} bins of the reference's range.</p>"
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
