"""Drift: how far new data has moved from the data a model was trained on, computed out-of-core.

Per feature, the **standardized mean difference** ``(mean_new − mean_ref) / sqrt((var_ref +
var_new) / 2)`` (population variances) and the **population stability index**
``Σ_b (q_b − p_b)·ln(q_b / p_b)`` over ``bins`` equal-width bins spanning the reference's range
(values outside it count in the first or last bin; an empty bin's fraction is floored at
:data:`PSI_FLOOR`), plus the rate of each class in both sets.

Two passes over the reference — moments and range, then histograms with the edges from the
first — and one over the new data (moments, histograms and class counts at once, in the same
graph as the reference's second pass). Each chunk yields small sums; they are combined in chunk
order (means and squared deviations with Chan's pairwise update), so the result does not depend
on the scheduler.
"""

import uuid

import numpy as np

from dlr.engine import run_graph
from dlr.sources import Source

#: Fraction given to an empty histogram bin in the PSI (avoids log(0)); a common choice.
PSI_FLOOR = 1e-4


def _samples_first(x, samples_first: bool) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x if samples_first else x.T


def _moments_task(x, y, samples_first):
    """(count, mean (n,), M2 (n,), min (n,), max (n,), {label: count}) of one chunk."""
    x = _samples_first(x, samples_first)
    mean = x.mean(axis=0)
    labels, counts = np.unique(np.asarray(y), return_counts=True)
    return (
        x.shape[0],
        mean,
        ((x - mean) ** 2).sum(axis=0),
        x.min(axis=0),
        x.max(axis=0),
        dict(zip(labels.tolist(), counts.tolist(), strict=True)),
    )


def _histogram_task(x, samples_first, lo, width, bins):
    """(n, bins) counts of one chunk on the edges ``lo + k·width``."""
    x = _samples_first(x, samples_first)
    n = x.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(width > 0, (x - lo) / np.where(width > 0, width, 1), 0)
    index = np.clip(np.floor(scaled), 0, bins - 1).astype(np.intp)
    flat = (index + np.arange(n) * bins).ravel()
    return np.bincount(flat, minlength=n * bins).reshape(n, bins)


def _both_task(x, y, samples_first, lo, width, bins):
    return _moments_task(x, y, samples_first), _histogram_task(x, samples_first, lo, width, bins)


def _combine_moments(parts) -> dict:
    """Chunk moments combined in chunk order (Chan et al.'s pairwise update)."""
    count, mean, m2, lo, hi, labels = parts[0]
    mean, m2, labels = mean.copy(), m2.copy(), dict(labels)
    for c, mu, q, a, b, lab in parts[1:]:
        total = count + c
        delta = mu - mean
        mean = mean + delta * (c / total)
        m2 = m2 + q + delta**2 * (count * c / total)
        lo, hi, count = np.minimum(lo, a), np.maximum(hi, b), total
        for k, v in lab.items():
            labels[k] = labels.get(k, 0) + v
    return {"count": count, "mean": mean, "var": m2 / count, "min": lo, "max": hi, "labels": labels}


def _add_in_order(parts) -> np.ndarray:
    total = np.array(parts[0], dtype=np.int64, copy=True)
    for p in parts[1:]:
        total += p
    return total


def _tasks(source: Source, name: str, task, *args, labels: bool = True) -> tuple[dict, list]:
    """One ``task(x, [y,] *args)`` per chunk of ``source``: the graph and its keys."""
    keys = [(name, i) for i in range(source.n_chunks)]
    dsk = dict(source.graph)
    for i, key in enumerate(keys):
        x, y, _ = source.exprs(i)
        dsk[key] = (task, x, y, *args) if labels else (task, x, *args)
    return dsk, keys


def psi(reference_counts: np.ndarray, new_counts: np.ndarray) -> np.ndarray:
    """Population stability index per row of two (n, bins) count tables."""
    p = np.maximum(reference_counts / reference_counts.sum(axis=1, keepdims=True), PSI_FLOOR)
    q = np.maximum(new_counts / new_counts.sum(axis=1, keepdims=True), PSI_FLOOR)
    return ((q - p) * np.log(q / p)).sum(axis=1)


def standardized_mean_difference(ref: dict, new: dict) -> np.ndarray:
    """(mean_new − mean_ref) / pooled standard deviation, per feature (0 where both are
    constant and equal, ±inf where they are constant and differ)."""
    diff = new["mean"] - ref["mean"]
    pooled = np.sqrt((ref["var"] + new["var"]) / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        smd = np.where(pooled > 0, diff / np.where(pooled > 0, pooled, 1), np.sign(diff) * np.inf)
    return np.where((pooled == 0) & (diff == 0), 0.0, smd)


def drift(
    reference: Source,
    new: Source,
    *,
    names: list[str] | None = None,
    bins: int = 10,
    get=None,
) -> dict:
    """Per-feature shift of ``new`` against ``reference`` and the shift of the class rates.

    Parameters
    ----------
    reference, new : sources with labels and the same number of features n.
    names : the n feature names (default ``x0``, ``x1``, ...).
    bins : histogram bins of the PSI.

    Returns
    -------
    dict with ``features`` (one entry per feature: name, smd, psi, means and standard
    deviations of both sets), ``label_rates`` ({"reference": {label: rate}, "new": {...}}),
    and the summary statistics a gate can threshold: ``smd`` (largest absolute SMD), ``psi``
    (largest PSI) and ``label_shift`` (largest absolute change of a class rate).
    """
    if new.n_features != reference.n_features:
        raise ValueError(
            f"new data has {new.n_features} features, the reference {reference.n_features}"
        )
    names = names or [f"x{j}" for j in range(reference.n_features)]
    token = uuid.uuid4().hex[:10]
    first = reference.samples_first
    dsk, keys = _tasks(reference, f"dlr-drift-moments-{token}", _moments_task, first)
    ref = _combine_moments(run_graph(dsk, keys, get))
    lo, width = ref["min"], (ref["max"] - ref["min"]) / bins
    hist_dsk, hist_keys = _tasks(
        reference, f"dlr-drift-hist-{token}", _histogram_task, first, lo, width, bins, labels=False
    )
    new_dsk, new_keys = _tasks(
        new, f"dlr-drift-new-{token}", _both_task, new.samples_first, lo, width, bins
    )
    results = run_graph({**hist_dsk, **new_dsk}, hist_keys + new_keys, get)
    ref_hist = _add_in_order(results[: len(hist_keys)])
    both = results[len(hist_keys) :]
    cur = _combine_moments([b[0] for b in both])
    new_hist = _add_in_order([b[1] for b in both])
    smd = standardized_mean_difference(ref, cur)
    index = psi(ref_hist, new_hist)
    classes = sorted(set(ref["labels"]) | set(cur["labels"]))
    rates = {
        which: {str(k): stats["labels"].get(k, 0) / stats["count"] for k in classes}
        for which, stats in (("reference", ref), ("new", cur))
    }
    features = [
        {
            "name": name,
            "smd": float(smd[j]),
            "psi": float(index[j]),
            "reference_mean": float(ref["mean"][j]),
            "new_mean": float(cur["mean"][j]),
            "reference_std": float(np.sqrt(ref["var"][j])),
            "new_std": float(np.sqrt(cur["var"][j])),
        }
        for j, name in enumerate(names)
    ]
    return {
        "reference_samples": int(ref["count"]),
        "new_samples": int(cur["count"]),
        "bins": bins,
        "features": features,
        "label_rates": rates,
        "smd": float(np.max(np.abs(smd))),
        "psi": float(np.max(index)),
        "label_shift": max(abs(rates["new"][k] - rates["reference"][k]) for k in rates["new"]),
    }
