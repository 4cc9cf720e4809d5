"""Binned score distributions, from which a report draws ROC curves: any data size.

For each binary model, the predicted probability of the second class is counted in ``bins``
equal-width bins, separately for the samples of each class: :func:`chunk_counts` per chunk,
summed over the chunks in the evaluation's first pass (:func:`dlr.scoring.evaluate_many` with
``curve_bins``), so only (2 × bins) counts per model ever reach the client. The ROC curve
through the bin edges follows from cumulative sums of the two histograms.
"""

import numpy as np

#: Bins of the score histograms a run's report draws its ROC curves from.
BINS = 200


def chunk_counts(p: np.ndarray, positive: np.ndarray, bins: int) -> np.ndarray:
    """(2, bins) int64 counts of a chunk: [negatives, positives] per bin of ``p`` (m_c,) in
    [0, 1] (bin b holds b/bins ≤ p < (b + 1)/bins, the last one p = 1 too); ``positive``
    (m_c,) bool."""
    b = np.minimum((p * bins).astype(np.intp), bins - 1)
    b += bins * positive  # the positives' counts after the negatives'
    return np.bincount(b, minlength=2 * bins).reshape(2, bins).astype(np.int64)


def roc_points(histogram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at the bin edges, from (2, bins) counts, (bins + 1,) each,
    from (0, 0) (threshold above every score) to (1, 1)."""
    neg, pos = histogram[0][::-1], histogram[1][::-1]
    fpr = np.r_[0.0, np.cumsum(neg)] / max(neg.sum(), 1)
    tpr = np.r_[0.0, np.cumsum(pos)] / max(pos.sum(), 1)
    return fpr, tpr
