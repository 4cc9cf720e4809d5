"""Drift: how far new data has moved from the data a model was trained on, from summaries.

Per feature, the **standardized mean difference** ``(mean_new − mean_ref) / sqrt((var_ref +
var_new) / 2)`` (population variances) and the **population stability index**
``Σ_b (q_b − p_b)·ln(q_b / p_b)`` over the registry's drift bins (:class:`dlr.summary.Edges`:
equal-width bins over the range of its first ingest, values outside them in the first or last
bin; an empty bin's fraction is floored at :data:`PSI_FLOOR`), plus the rate of each class in
both sets.

Both sets are given as :class:`dlr.summary.Summary` values — merged per-span summaries kept at
ingest (:mod:`dlr.spansummary`) — so drift reads no data: pure NumPy on a few numbers per
feature.
"""

import numpy as np

from dlr.summary import Summary

#: Fraction given to an empty histogram bin in the PSI (avoids log(0)); a common choice.
PSI_FLOOR = 1e-4


def psi(reference_counts: np.ndarray, new_counts: np.ndarray) -> np.ndarray:
    """Population stability index per row of two (n, bins) count tables."""
    p = np.maximum(reference_counts / reference_counts.sum(axis=1, keepdims=True), PSI_FLOOR)
    q = np.maximum(new_counts / new_counts.sum(axis=1, keepdims=True), PSI_FLOOR)
    return ((q - p) * np.log(q / p)).sum(axis=1)


def standardized_mean_difference(ref: Summary, new: Summary) -> np.ndarray:
    """(mean_new − mean_ref) / pooled standard deviation, per feature (0 where both are
    constant and equal, ±inf where they are constant and differ)."""
    diff = new.mean - ref.mean
    pooled = np.sqrt((ref.var + new.var) / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        smd = np.where(pooled > 0, diff / np.where(pooled > 0, pooled, 1), np.sign(diff) * np.inf)
    return np.where((pooled == 0) & (diff == 0), 0.0, smd)


def drift(reference: Summary, new: Summary, *, names: list[str] | None = None) -> dict:
    """Per-feature shift of ``new`` against ``reference`` and the shift of the class rates.

    Parameters
    ----------
    reference, new : summaries of at least one row each, of the same n features, with
        histograms on the same edges.
    names : the n feature names (default ``x0``, ``x1``, ...).

    Returns
    -------
    dict with ``features`` (one entry per feature: name, smd, psi, means and standard
    deviations of both sets), ``label_rates`` ({"reference": {label: rate}, "new": {...}}),
    the summary statistics a gate can threshold: ``smd`` (largest absolute SMD), ``psi``
    (largest PSI) and ``label_shift`` (largest absolute change of a class rate), and
    ``reference_samples``, ``new_samples``, ``bins``.
    """
    if new.mean.shape != reference.mean.shape or new.hist.shape != reference.hist.shape:
        raise ValueError(
            f"new data has {new.hist.shape} (features, bins), the reference {reference.hist.shape}"
        )
    n, bins = reference.hist.shape
    names = names or [f"x{j}" for j in range(n)]
    smd = standardized_mean_difference(reference, new)
    index = psi(reference.hist, new.hist)
    classes = sorted(set(reference.labels) | set(new.labels))
    rates = {
        which: {str(k): s.labels.get(k, 0) / s.count for k in classes}
        for which, s in (("reference", reference), ("new", new))
    }
    ref_std, new_std = np.sqrt(reference.var), np.sqrt(new.var)
    features = [
        {
            "name": name,
            "smd": float(smd[j]),
            "psi": float(index[j]),
            "reference_mean": float(reference.mean[j]),
            "new_mean": float(new.mean[j]),
            "reference_std": float(ref_std[j]),
            "new_std": float(new_std[j]),
        }
        for j, name in enumerate(names)
    ]
    return {
        "reference_samples": int(reference.count),
        "new_samples": int(new.count),
        "bins": int(bins),
        "features": features,
        "label_rates": rates,
        "smd": float(np.max(np.abs(smd))),
        "psi": float(np.max(index)),
        "label_shift": max(abs(rates["new"][k] - rates["reference"][k]) for k in rates["new"]),
    }
