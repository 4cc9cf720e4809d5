"""Binned score distributions, from which a report draws ROC curves: one pass, any data size.

For each model, the predicted probability of the second class is counted in ``bins`` equal-width
bins, separately for the samples of each class. Several models share the pass (the chunk is read
once). The ROC curve through the bin edges follows from cumulative sums of the two histograms;
only (models × 2 × bins) counts ever reach the client.
"""

import uuid

import numpy as np

from dlr.engine import run_graph
from dlr.kernel import chunk_logits
from dlr.numerics import sigmoid
from dlr.sources import Source

BINS = 200


def _histogram_task(x, y, thetas, positive, samples_first, bins):
    """(models, 2, bins) counts: [negatives, positives] per score bin, per model."""
    hit = np.asarray(y) == positive
    out = np.zeros((len(thetas), 2, bins), dtype=np.int64)
    for i, theta in enumerate(thetas):
        p = sigmoid(chunk_logits(x, theta, samples_first=samples_first))
        b = np.minimum((p * bins).astype(np.intp), bins - 1)
        out[i, 0] = np.bincount(b[~hit], minlength=bins)
        out[i, 1] = np.bincount(b[hit], minlength=bins)
    return out


def score_histograms(
    source: Source, thetas: list[np.ndarray], classes: np.ndarray, *, bins: int = BINS, get=None
) -> np.ndarray | None:
    """(len(thetas), 2, bins) counts of negatives and positives per bin of P(y = classes[1]).

    ``thetas``: binary models' (1, n_features + 1) parameters. None for more than two classes
    (a one-vs-rest ROC per class is not drawn).
    """
    if len(classes) != 2:
        return None
    token = uuid.uuid4().hex[:10]
    keys = [(f"dlr-curves-{token}", i) for i in range(source.n_chunks)]
    dsk = dict(source.graph)
    for i, key in enumerate(keys):
        x, y, _ = source.exprs(i)
        dsk[key] = (_histogram_task, x, y, thetas, classes[1], source.samples_first, bins)
    parts = run_graph(dsk, keys, get)
    total = parts[0].copy()
    for p in parts[1:]:
        total += p
    return total


def roc_points(histogram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at the bin edges, from (2, bins) counts, (bins + 1,) each,
    from (0, 0) (threshold above every score) to (1, 1)."""
    neg, pos = histogram[0][::-1], histogram[1][::-1]
    fpr = np.r_[0.0, np.cumsum(neg)] / max(neg.sum(), 1)
    tpr = np.r_[0.0, np.cumsum(pos)] / max(pos.sum(), 1)
    return fpr, tpr
