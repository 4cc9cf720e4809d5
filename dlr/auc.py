"""ROC AUC in memory independent of the number of samples: histograms of positives and negatives
over a partition of the scores, refined where it matters, with a proven error bound.

Scores (float64) are mapped to order-preserving 64-bit keys. A partition of the key space is a
sorted list of segments, each split into 2^j equal sub-ranges of keys ("bins"). One pass counts,
per chunk, the positives and negatives in each bin, with the smallest and largest key met
there; per-chunk counts are sparse (at most one entry per sample) and are merged pairwise in a
tree, so no task ever holds more than a partition's worth of bins.

From the counts in key order, the AUC is Σ_b pos_b·(neg_below_b + ½·neg_b) / (P·N): exact except
for the pairs of a positive and a negative inside one bin, whose order the counts do not know
and which are counted ½. So the error is at most Σ pos_b·neg_b / (2·P·N) over the bins holding
more than one distinct score (a bin whose smallest and largest key are equal holds one score:
its pairs are real ties, which count ½ as in scikit-learn). When that bound exceeds the target,
the next pass re-partitions the data: each such bin's [smallest, largest] key range is split
into about ``bins × n_b / m`` sub-bins, so that bins hold roughly equal numbers of samples and
the bound falls to about 1/``bins``.
"""

import numpy as np

#: Bins of a partition (the first one: the top 20 bits of the key).
BINS = 1 << 20
#: Target of the error bound on the AUC.
TARGET = 1e-6
#: Passes at most; the bound reached is reported whatever it is.
MAX_PASSES = 4

_SIGN = np.uint64(1 << 63)


def keys(scores: np.ndarray) -> np.ndarray:
    """Order-preserving uint64 keys of float64 scores (−0.0 and 0.0 get the same key)."""
    bits = (np.asarray(scores, dtype=np.float64) + 0.0).view(np.uint64)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


class Partition:
    """Segments of the key space: segment i starts at key ``starts[i]`` and holds
    ``2**widths[i]`` bins of ``2**shifts[i]`` keys each; its bins are numbered from
    ``offsets[i]``. Keys below the first start or past a segment's end belong to the nearest
    bin (the partition covers every key that the data holds)."""

    def __init__(self, starts, widths, shifts):
        self.starts = np.asarray(starts, dtype=np.uint64)
        self.widths = np.asarray(widths, dtype=np.int64)
        self.shifts = np.asarray(shifts, dtype=np.uint64)
        sizes = np.left_shift(1, self.widths)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.sizes = sizes
        self.n_bins = int(sizes.sum())

    @classmethod
    def initial(cls) -> "Partition":
        bits = int(np.log2(BINS))
        return cls([0], [bits], [64 - bits])

    def bins(self, k: np.ndarray) -> np.ndarray:
        """Bin numbers (int64) of keys ``k``."""
        seg = np.maximum(np.searchsorted(self.starts, k, side="right") - 1, 0)
        below = k < self.starts[seg]
        inside = np.right_shift(k - np.where(below, k, self.starts[seg]), self.shifts[seg])
        inside = np.minimum(inside.astype(np.int64), self.sizes[seg] - 1)
        return self.offsets[seg] + inside


def chunk_histogram(k: np.ndarray, positive: np.ndarray, partition: Partition) -> tuple:
    """Sparse counts of one chunk's keys ``k`` (c,) and labels ``positive`` (c,) bool: (bin
    numbers (b,) sorted, positives (b,), negatives (b,), smallest key (b,), largest key (b,))."""
    b = partition.bins(k)
    order = np.argsort(b)  # the order within a bin does not matter: sums, smallest, largest
    b, k, positive = b[order], k[order], positive[order]
    return _collapse(b, positive.astype(np.int64), (~positive).astype(np.int64), k, k)


def _collapse(b, pos, neg, lo, hi) -> tuple:
    """Entries sorted by bin (in any order within a bin) → one entry per bin."""
    if b.size == 0:
        return b, pos, neg, lo, hi
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    return (
        b[starts],
        np.add.reduceat(pos, starts),
        np.add.reduceat(neg, starts),
        np.minimum.reduceat(lo, starts),
        np.maximum.reduceat(hi, starts),
    )


def merge(*parts: tuple) -> tuple:
    """Sum sparse histograms (exact integer counts, so the order of merging does not matter)."""
    b, pos, neg, lo, hi = (np.concatenate(column) for column in zip(*parts, strict=True))
    order = np.argsort(b)
    return _collapse(b[order], pos[order], neg[order], lo[order], hi[order])


def auc_and_bound(histogram: tuple) -> tuple[float, float]:
    """AUC from a merged histogram and the bound on its error (NaN, 0 for one class only)."""
    _, pos, neg, lo, hi = histogram
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan"), 0.0
    neg_below = np.cumsum(neg) - neg
    pairs = float(n_pos) * float(n_neg)
    auc = float((pos * (neg_below + 0.5 * neg)).sum() / pairs)
    mixed = lo != hi
    bound = float((pos[mixed] * neg[mixed]).sum() / (2 * pairs))
    return auc, bound


def refine(histogram: tuple) -> Partition:
    """The next partition: every bin that holds positives, negatives and more than one score
    has its [smallest, largest] key range split into about ``BINS × n_b / m`` equal sub-ranges
    (a power of two, no finer than single keys); every other bin stays one bin. The scores are
    the same in every pass, so each key falls into the range of the bin it fell into before."""
    _, pos, neg, lo, hi = histogram
    n = pos + neg
    mixed = (pos > 0) & (neg > 0) & (lo != hi)
    # Bit length of hi − lo, overestimated by one at worst (float rounding): then the sub-ranges
    # are coarser than they could be, and still cover the range.
    _, bits = np.frexp((hi - lo).astype(np.float64))
    want = np.maximum(2, np.ceil(BINS * n / n.sum()))
    widths = np.where(mixed, np.minimum(np.ceil(np.log2(want)).astype(np.int64), bits), 0)
    shifts = np.where(mixed, bits - widths, 63)
    return Partition(lo, widths, shifts)
