"""ROC AUC in memory independent of the number of samples: histograms of positives and negatives
over a partition of the scores, refined where it matters, with a proven error bound.

Scores (float64) are mapped to order-preserving 64-bit keys. A partition of the key space is a
sorted list of segments, each split into 2^j equal sub-ranges of keys ("bins"). One pass counts,
per chunk, the positives and negatives in each bin, with the smallest and largest key met
there; per-chunk counts are sparse (at most one entry per sample) and are merged pairwise in a
tree. A merged histogram keeps at most :data:`BINS` entries: past that, neighbouring bins are
joined (bin numbers halved until it fits), so no task ever holds more than about 2 × BINS.

From the counts in key order, the AUC is Σ_b pos_b·(neg_below_b + ½·neg_b) / (P·N): exact except
for the pairs of a positive and a negative inside one bin, whose order the counts do not know
and which are counted ½. So the error is at most Σ pos_b·neg_b / (2·P·N) over the bins holding
more than one distinct score (a bin whose smallest and largest key are equal holds one score:
its pairs are real ties, which count ½ as in scikit-learn).

Up to :data:`BINS` samples no histogram is needed: a chunk of at most that many samples, under
the first partition, is kept as its samples' keys, sorted, the positives' apart from the
negatives' (:class:`SortedKeys`); such parts merge by sorting while their total stays within
BINS, and give the exact AUC — each positive counts the negatives below its key and half those
equal to it, in integers, as scikit-learn's roc_auc_score counts them —, with a bound of 0. A
merge that would pass BINS turns its parts into histograms over the first partition. The
positives need no merge: the negatives of every part are merged (:func:`merged_negatives`),
then groups of parts count their positives' wins against them side by side
(:func:`exact_count`), and the counts add up to the AUC (:func:`exact_auc_of`).

The first partition is fine (the top :data:`FIRST_BITS` bits of the key: bins of relative width
about 1e-11), so when the samples are more than BINS nearly every bin still holds one distinct
score in the first pass, or few. When the bound exceeds the target — more samples than
BINS, or scores closer than a bin — the next pass re-partitions the data: each such bin's
[smallest, largest] key range is split into about ``BINS × n_b / m`` sub-bins, so that bins hold
roughly equal numbers of samples and the bound falls to about 1/``BINS``.
"""

from typing import NamedTuple

import numpy as np

#: Entries a merged histogram keeps at most; the bins a refinement aims at.
BINS = 1 << 20
#: The first partition's bins: the top FIRST_BITS bits of the key (2^16 keys each).
FIRST_BITS = 48
#: Target of the error bound on the AUC.
TARGET = 1e-6
#: Passes at most; the bound reached is reported whatever it is.
MAX_PASSES = 4
#: Positives searched at a time by the exact AUC (arrays of 64 KB).
SEARCH_BLOCK = 1 << 13

_SIGN = np.int64(-(1 << 63))  # the sign bit alone


def keys(scores: np.ndarray) -> np.ndarray:
    """Order-preserving uint64 keys of float64 scores (−0.0 and 0.0 get the same key): the
    bits of a negative score inverted, those of a positive one with the sign bit set."""
    bits = (np.asarray(scores, dtype=np.float64) + 0.0).view(np.int64)
    flip = bits >> 63  # all ones for a negative score (arithmetic shift), else 0
    flip |= _SIGN
    flip ^= bits
    return flip.view(np.uint64)


class Partition:
    """Segments of the key space: segment i starts at key ``starts[i]`` and holds
    ``2**widths[i]`` bins of ``2**shifts[i]`` keys each; its bins are numbered from
    ``offsets[i]``. Keys below the first start or past a segment's end belong to the nearest
    bin (the partition covers every key that the data holds). Histograms over it keep at most
    ``limit`` entries, joining neighbouring bins past that (None: no limit, for partitions
    whose bins are few enough by construction)."""

    def __init__(self, starts, widths, shifts, limit: int | None = None):
        self.limit = limit
        self.starts = np.asarray(starts, dtype=np.uint64)
        self.widths = np.asarray(widths, dtype=np.int64)
        self.shifts = np.asarray(shifts, dtype=np.uint64)
        sizes = np.left_shift(1, self.widths)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.sizes = sizes
        self.n_bins = int(sizes.sum())
        self._whole_keys = (
            self.starts.size == 1
            and int(self.starts[0]) == 0
            and 0 < int(self.shifts[0])
            and int(self.widths[0]) + int(self.shifts[0]) >= 64
        )

    @classmethod
    def initial(cls) -> "Partition":
        return cls([0], [FIRST_BITS], [64 - FIRST_BITS], limit=BINS)

    def bins(self, k: np.ndarray) -> np.ndarray:
        """Bin numbers (int64) of keys ``k``: a non-decreasing function of the key."""
        if self._whole_keys:  # one segment over every key (the first partition): top bits
            return np.right_shift(k, self.shifts[0]).view(np.int64)
        seg = np.maximum(np.searchsorted(self.starts, k, side="right") - 1, 0)
        below = k < self.starts[seg]
        inside = np.right_shift(k - np.where(below, k, self.starts[seg]), self.shifts[seg])
        inside = np.minimum(inside.astype(np.int64), self.sizes[seg] - 1)
        return self.offsets[seg] + inside


class Histogram(NamedTuple):
    """Sparse counts over a partition's bins, one entry per occupied bin, in key order.

    Attributes
    ----------
    bins : ndarray of shape (b,), int64
        Bin numbers, sorted, in units of ``2**shift`` of the partition's bins.
    pos, neg : ndarray of shape (b,), int64
        Positives and negatives in each.
    lo, hi : ndarray of shape (b,), uint64
        The smallest and largest key met in each.
    shift : int
        How many times neighbouring bins were joined (bin numbers halved) to keep the entries
        within ``limit``.
    limit : int or None
        Entries kept at most (the partition's ``limit``).
    """

    bins: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    shift: int = 0
    limit: int | None = None


class SortedKeys(NamedTuple):
    """Every sample of one or more chunks, exactly: the keys of the positives and those of the
    negatives, each sorted (at most the partition's ``limit`` in all).

    Attributes
    ----------
    pos, neg : ndarray of shape (p,) and (q,), uint64
        Sorted keys of the positives and of the negatives.
    partition : Partition
        The partition (the first one) whose histogram these become past its ``limit``.
    """

    pos: np.ndarray
    neg: np.ndarray
    partition: "Partition"

    @property
    def size(self) -> int:
        return self.pos.size + self.neg.size

    def histogram(self) -> "Histogram":
        """The same samples as sparse counts over the partition's bins."""
        k = np.concatenate([self.pos, self.neg])
        positive = np.zeros(k.size, dtype=bool)
        positive[: self.pos.size] = True
        return _histogram(k, positive, self.partition)


def chunk_histogram(k: np.ndarray, positive: np.ndarray, partition: Partition):
    """One chunk's keys ``k`` (c,) and labels ``positive`` (c,) bool: as :class:`SortedKeys`
    under a partition with a limit that ``c`` does not pass, else as a :class:`Histogram`."""
    if partition.limit is not None and k.size <= partition.limit:
        return SortedKeys(np.sort(k[positive]), np.sort(k[~positive]), partition)
    return _histogram(k, positive, partition)


def _histogram(k: np.ndarray, positive: np.ndarray, partition: Partition) -> "Histogram":
    """Sparse counts of keys ``k`` (c,) and labels ``positive`` (c,) bool."""
    order = np.argsort(k)
    k = k[order]
    b = partition.bins(k)  # sorted, as the keys are: bins do not decrease with the key
    pos = positive[order].astype(np.int64)
    return _capped(_collapse(b, pos, 1 - pos, k, k, 0, partition.limit))


def _collapse(b, pos, neg, lo, hi, shift: int, limit: int | None) -> Histogram:
    """Entries sorted by bin (in any order within a bin) → one entry per bin."""
    if b.size == 0:
        return Histogram(b, pos, neg, lo, hi, shift, limit)
    changes = b[1:] != b[:-1]
    if changes.all():  # one entry per bin already (usual with the first partition)
        return Histogram(b, pos, neg, lo, hi, shift, limit)
    starts = np.flatnonzero(np.r_[True, changes])
    return Histogram(
        b[starts],
        np.add.reduceat(pos, starts),
        np.add.reduceat(neg, starts),
        np.minimum.reduceat(lo, starts),
        np.maximum.reduceat(hi, starts),
        shift,
        limit,
    )


def _coarser(h: Histogram, shift: int) -> Histogram:
    """``h`` with bin numbers in units of ``2**shift`` partition bins (``shift`` ≥ ``h.shift``):
    neighbouring bins joined, their counts added, the smallest and largest keys kept."""
    if shift == h.shift:
        return h
    b = np.right_shift(h.bins, shift - h.shift)
    return _collapse(b, h.pos, h.neg, h.lo, h.hi, shift, h.limit)


def _capped(h: Histogram) -> Histogram:
    """``h`` coarsened until it holds at most ``h.limit`` entries."""
    while h.limit is not None and h.bins.size > h.limit:
        h = _coarser(h, h.shift + 1)
    return h


def _sum(parts: list[Histogram]) -> Histogram:
    """The sum of histograms (of the same partition), within their limit."""
    shift = max(p.shift for p in parts)
    parts = [_coarser(p, shift) for p in parts]
    # a histogram of one key per bin has its smallest and largest keys in one array: so does
    # the sum, as long as it stays so (the first pass, usually)
    one_key = all(p.lo is p.hi for p in parts)
    columns = [np.concatenate(column) for column in zip(*(p[:4] for p in parts), strict=True)]
    order = np.argsort(columns[0], kind="stable")  # sorted runs: a merge
    b, pos, neg, lo = (c[order] for c in columns)
    hi = lo if one_key else np.concatenate([p.hi for p in parts])[order]
    return _capped(_collapse(b, pos, neg, lo, hi, shift, parts[0].limit))


def merge(*parts):
    """Sum the parts (:class:`SortedKeys` or :class:`Histogram` of the same partition), in the
    order given (exact integer counts; where neighbouring bins are joined depends only on that
    order, so the result is deterministic). Sorted keys stay sorted keys while their total
    stays within the limit; past it every part becomes a histogram. Histograms are added a
    batch at a time, a batch holding at most about twice the limit's entries, so that merging
    never holds more than about three times it."""
    if all(isinstance(p, SortedKeys) for p in parts):
        if sum(p.size for p in parts) <= parts[0].partition.limit:
            # sorted runs: "stable" is a merge of them (timsort), ~10x faster than a quicksort
            return SortedKeys(
                np.sort(np.concatenate([p.pos for p in parts]), kind="stable"),
                np.sort(np.concatenate([p.neg for p in parts]), kind="stable"),
                parts[0].partition,
            )
    total, batch, size = None, [], 0
    for part in parts:
        if isinstance(part, SortedKeys):
            part = part.histogram()
        batch.append(part)
        size += part.bins.size
        if part.limit is not None and size > part.limit:
            total = _sum([total, *batch] if total is not None else batch)
            batch, size = [], total.bins.size
    if batch:
        total = _sum([total, *batch] if total is not None else batch)
    return total


def auc_and_bound(histogram) -> tuple[float, float]:
    """AUC from merged :class:`SortedKeys` (exact: bound 0) or a merged :class:`Histogram`, and
    the bound on its error (NaN, 0 for one class only)."""
    if isinstance(histogram, SortedKeys):
        return exact_auc_of([exact_count(histogram.neg, histogram)], histogram.neg.size)
    pos, neg, lo, hi = histogram.pos, histogram.neg, histogram.lo, histogram.hi
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan"), 0.0
    neg_below = np.cumsum(neg) - neg
    pairs = float(n_pos) * float(n_neg)
    auc = float((pos * (neg_below + 0.5 * neg)).sum() / pairs)
    mixed = lo != hi
    bound = float((pos[mixed] * neg[mixed]).sum() / (2 * pairs))
    return auc, bound


def merged_negatives(*parts: SortedKeys) -> np.ndarray:
    """The negatives' keys of :class:`SortedKeys` parts, merged: sorted (q,) uint64."""
    # sorted runs: "stable" is a merge of them (timsort)
    return np.sort(np.concatenate([p.neg for p in parts]), kind="stable")


def exact_count(neg: np.ndarray, *parts: SortedKeys) -> tuple[int, int]:
    """(twice the pairs a positive wins, positives) of the positives of ``parts`` against the
    negatives ``neg`` (sorted, of every part): the terms of the exact AUC, summed in integers,
    so any split of the parts adds up to the same AUC (:func:`exact_auc_of`)."""
    twice, positives = 0, 0
    for p in parts:
        twice += _twice_wins(p.pos, neg)
        positives += p.pos.size
    return twice, positives


def exact_auc_of(counts, n_neg: int) -> tuple[float, float]:
    """The exact AUC (bound 0) from :func:`exact_count` of groups of the parts and the number
    of negatives; NaN for one class only."""
    twice, positives = (sum(c[i] for c in counts) for i in (0, 1))
    if positives == 0 or n_neg == 0:
        return float("nan"), 0.0
    return twice / (2 * positives * n_neg), 0.0


def _twice_wins(pos: np.ndarray, neg: np.ndarray) -> int:
    """Σ over the positives ``pos`` (sorted keys) of 2 × the negatives below + those tied,
    among the sorted keys ``neg``.

    The positives are searched :data:`SEARCH_BLOCK` at a time: the searches' small arrays are
    reused from the heap and stay in the cache, where arrays of every positive at once would be
    memory new to the process at each call (page faults cost more than the searches)."""
    if neg.size == 0:
        return 0
    twice, last = 0, neg.size - 1
    for start in range(0, pos.size, SEARCH_BLOCK):
        p = pos[start : start + SEARCH_BLOCK]
        below = np.searchsorted(neg, p, side="left")
        twice += 2 * int(below.sum())
        # ties: a positive whose key the negative just above its place has (none, with
        # distinct scores: then one search is enough)
        if (neg[np.minimum(below, last)] == p).any():
            twice += int((np.searchsorted(neg, p, side="right") - below).sum())
    return twice


def refine(histogram) -> Partition:
    """The next partition: every bin that holds positives, negatives and more than one score
    has its [smallest, largest] key range split into about ``BINS × n_b / m`` equal sub-ranges
    (a power of two, no finer than single keys); every other bin stays one bin. The scores are
    the same in every pass, so each key falls into the range of the bin it fell into before."""
    if isinstance(histogram, SortedKeys):
        histogram = histogram.histogram()
    pos, neg, lo, hi = histogram.pos, histogram.neg, histogram.lo, histogram.hi
    n = pos + neg
    mixed = (pos > 0) & (neg > 0) & (lo != hi)
    # Bit length of hi − lo, overestimated by one at worst (float rounding): then the sub-ranges
    # are coarser than they could be, and still cover the range.
    _, bits = np.frexp((hi - lo).astype(np.float64))
    want = np.maximum(2, np.ceil(BINS * n / n.sum()))
    widths = np.where(mixed, np.minimum(np.ceil(np.log2(want)).astype(np.int64), bits), 0)
    shifts = np.where(mixed, bits - widths, 63)
    return Partition(lo, widths, shifts)
