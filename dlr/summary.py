"""Summaries of a set of rows: what drift needs of them, a few numbers per feature (pure NumPy).

A :class:`Summary` of m rows of n features holds the count, per feature the mean, ``M2`` (the
sum of squared deviations from the mean), min and max, the count of each class, and the
(n, bins) histogram counts on the registry's drift :class:`Edges`. Summaries of disjoint rows
merge (:func:`merge`): counts, ranges, class counts and histograms exactly, means and M2 with
Chan et al.'s pairwise update, in the order given — so the same parts in the same order give
the same bits on any scheduler.

:class:`Accumulator` summarizes rows arriving in batches of any size over fixed blocks of
:func:`block_rows` rows (fixed by n alone), so a span's summary is the same bits whatever its
batch and chunk boundaries. All arithmetic is float64.
"""

from typing import NamedTuple

import numpy as np

#: Bytes of float64 features per block an :class:`Accumulator` summarizes at once.
BLOCK_BYTES = 8 << 20

#: Rows an :class:`Accumulator` copies (transposed) at a time: a tile that stays in cache.
TILE_ROWS = 1024

FORMAT = "dlr-summary"
FORMAT_VERSION = 1


class Edges(NamedTuple):
    """The drift histogram's bins: per feature ``bins`` equal-width bins over [lo, hi] (values
    outside count in the first or last bin; a feature with lo == hi puts every value in the
    first bin). ``lo``, ``hi``: (n,) float64."""

    bins: int
    lo: np.ndarray
    hi: np.ndarray

    @property
    def width(self) -> np.ndarray:
        return (self.hi - self.lo) / self.bins

    def to_json(self) -> dict:
        """The schema's ``drift`` entry: {"bins", "min": [...], "max": [...]}."""
        return {"bins": self.bins, "min": self.lo.tolist(), "max": self.hi.tolist()}

    @classmethod
    def from_json(cls, doc: dict | None) -> "Edges | None":
        if doc is None:
            return None
        return cls(int(doc["bins"]), np.asarray(doc["min"], float), np.asarray(doc["max"], float))

    @classmethod
    def spanning(cls, summary: "Summary", bins: int) -> "Edges":
        """``bins`` bins over the range of the rows ``summary`` summarizes."""
        return cls(bins, summary.min.copy(), summary.max.copy())


class Summary(NamedTuple):
    """``count`` rows: ``mean``, ``m2``, ``min``, ``max`` (n,) float64, ``labels`` {class:
    count}, ``hist`` (n, bins) int64 or None (not counted: no edges given)."""

    count: int
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray
    labels: dict
    hist: np.ndarray | None

    @property
    def var(self) -> np.ndarray:
        """Population variance per feature."""
        return self.m2 / self.count

    def with_hist(self, hist: np.ndarray) -> "Summary":
        return self._replace(hist=np.asarray(hist, dtype=np.int64))


def empty(n: int, edges: Edges | None = None) -> Summary:
    """The summary of no rows."""
    zeros = np.zeros(n)
    hist = None if edges is None else np.zeros((n, edges.bins), dtype=np.int64)
    return Summary(0, zeros, zeros.copy(), np.full(n, np.inf), np.full(n, -np.inf), {}, hist)


def _features_first(x: np.ndarray, samples_first: bool) -> np.ndarray:
    """``x`` as a C-contiguous float64 (n, m) array (each feature's values contiguous: the
    reductions below run along memory)."""
    x = x.T if samples_first else x
    return np.ascontiguousarray(x, dtype=np.float64)


def histogram(x: np.ndarray, edges: Edges, *, samples_first: bool = True) -> np.ndarray:
    """(n, bins) counts of the rows ``x`` — (m, n), or (n, m) if not ``samples_first`` — on
    ``edges``."""
    xt = _features_first(x, samples_first)
    return _histogram(xt, edges, np.empty(xt.shape[1]), np.empty(xt.shape[1], dtype=bool))


def _histogram(xt: np.ndarray, edges: Edges, scratch: np.ndarray, below: np.ndarray) -> np.ndarray:
    """:func:`histogram` of float64 (n, m) ``xt``, one feature at a time in ``scratch`` (m,)
    float64 and ``below`` (m,) bool (a feature's values stay in cache).

    A value's bin is ⌊s⌋ clipped to [0, bins − 1], with s = (x − lo) / width; so the count of
    bins below b is the count of s < b (b = 1 .. bins − 1): ``bins − 1`` comparisons, no
    index array to count.
    """
    n, m = xt.shape
    counts = np.zeros((n, edges.bins + 1), dtype=np.int64)
    counts[:, -1] = m
    width = edges.width
    for i in range(n):
        if not width[i] > 0:
            counts[i, 1:] = m  # a constant feature (width 0): every value in bin 0
            continue
        np.subtract(xt[i], edges.lo[i], out=scratch[:m])
        scratch[:m] *= 1.0 / width[i]
        for b in range(1, edges.bins):
            counts[i, b] = np.count_nonzero(np.less(scratch[:m], b, out=below[:m]))
    return np.diff(counts, axis=1)


def of_rows(
    x: np.ndarray, y: np.ndarray, edges: Edges | None = None, *, samples_first: bool = True
) -> Summary:
    """The summary of rows ``x`` — (m, n), or (n, m) if not ``samples_first`` — with classes
    ``y`` (m,); histograms only with ``edges``."""
    xt = _features_first(x, samples_first)
    return _summary(xt, y, edges, np.empty_like(xt), np.empty(xt.shape[1], dtype=bool))


def _summary(
    xt: np.ndarray,
    y: np.ndarray,
    edges: Edges | None,
    scratch: np.ndarray,
    below: np.ndarray,
) -> Summary:
    """:func:`of_rows` of float64 (n, m) ``xt``, computed in ``scratch`` (n, m) (and the
    histogram's comparisons in ``below`` (m,) bool)."""
    if xt.shape[1] == 0:
        return empty(xt.shape[0], edges)
    mean = xt.mean(axis=1)
    deviation = np.subtract(xt, mean[:, None], out=scratch)
    m2 = np.einsum("ij,ij->i", deviation, deviation)
    labels, counts = np.unique(np.asarray(y), return_counts=True)
    return Summary(
        xt.shape[1],
        mean,
        m2,
        xt.min(axis=1),
        xt.max(axis=1),
        dict(zip(labels.tolist(), counts.tolist(), strict=True)),
        None if edges is None else _histogram(xt, edges, scratch[0], below),
    )


def merge(parts) -> Summary:
    """The summary of the rows of all ``parts`` (at least one), combined left to right."""
    parts = list(parts)
    total = parts[0]
    for part in parts[1:]:
        total = _merge2(total, part)
    return total


def _merge2(a: Summary, b: Summary) -> Summary:
    if b.count == 0 or a.count == 0:
        kept = a if b.count == 0 else b
        hist = None if a.hist is None or b.hist is None else kept.hist
        return kept._replace(hist=hist)
    total = a.count + b.count
    delta = b.mean - a.mean
    labels = dict(a.labels)
    for k, v in b.labels.items():
        labels[k] = labels.get(k, 0) + v
    return Summary(
        total,
        a.mean + delta * (b.count / total),
        a.m2 + b.m2 + delta**2 * (a.count * b.count / total),
        np.minimum(a.min, b.min),
        np.maximum(a.max, b.max),
        labels,
        None if a.hist is None or b.hist is None else a.hist + b.hist,
    )


def block_rows(n: int) -> int:
    """Rows per block of :class:`Accumulator` for n features."""
    return max(1, BLOCK_BYTES // (8 * n))


class Accumulator:
    """The summary of rows added in batches of any size, summarized over fixed blocks of
    :func:`block_rows` rows and merged in order (the same bits whatever the batches). Each
    block is gathered, transposed, into one float64 (n, block) buffer and summarized in a
    second one (and a bool (block,) one): no allocation per block. An accumulator made with
    ``reuse`` (one of the same n that is done) takes over its buffers, whose pages
    are then touched once for several summaries, not once each."""

    def __init__(self, n: int, edges: Edges | None, *, reuse: "Accumulator | None" = None):
        self.edges, self.block = edges, block_rows(n)
        self.total = empty(n, edges)
        if reuse is not None and reuse.x.shape == (n, self.block):
            self.x, self.scratch, self.y, self.below = reuse.x, reuse.scratch, reuse.y, reuse.below
        else:
            self.x, self.scratch = np.empty((n, self.block)), np.empty((n, self.block))
            self.y = np.empty(self.block, dtype=np.int64)
            self.below = np.empty(self.block, dtype=bool)
        self.fill = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Rows ``x`` (m, n), classes ``y`` (m,)."""
        start = 0
        while start < len(y):
            take = min(self.block - self.fill, len(y) - start, TILE_ROWS)
            self.x[:, self.fill : self.fill + take] = x[start : start + take].T
            self.y[self.fill : self.fill + take] = y[start : start + take]
            self.fill += take
            start += take
            if self.fill == self.block:
                self._summarize()

    def result(self) -> Summary:
        """The summary of every row added."""
        if self.fill:
            self._summarize()
        return self.total

    def _summarize(self) -> None:
        m = self.fill
        if m == self.block:
            part = _summary(self.x, self.y, self.edges, self.scratch, self.below)
        else:  # the last, partial block
            part = of_rows(self.x[:, :m], self.y[:m], self.edges, samples_first=False)
        self.total = _merge2(self.total, part)
        self.fill = 0


def to_json(s: Summary) -> dict:
    """A JSON document of ``s`` (floats in shortest round-trip form: loading gives the same
    bits); the range of no rows is null."""
    some = s.count > 0
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "count": int(s.count),
        "mean": s.mean.tolist(),
        "m2": s.m2.tolist(),
        "min": s.min.tolist() if some else None,
        "max": s.max.tolist() if some else None,
        "labels": {str(k): int(v) for k, v in sorted(s.labels.items())},
        "hist": s.hist.tolist(),
    }


def from_json(doc: dict) -> Summary:
    """The summary :func:`to_json` wrote; raises ValueError for anything else."""
    if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"not a {FORMAT} document of format version {FORMAT_VERSION}")
    n = len(doc["mean"])
    count = int(doc["count"])
    return Summary(
        count,
        np.asarray(doc["mean"], dtype=np.float64).reshape(n),
        np.asarray(doc["m2"], dtype=np.float64).reshape(n),
        np.asarray(doc["min"], dtype=np.float64) if count else np.full(n, np.inf),
        np.asarray(doc["max"], dtype=np.float64) if count else np.full(n, -np.inf),
        {int(k): int(v) for k, v in doc["labels"].items()},
        np.asarray(doc["hist"], dtype=np.int64).reshape(n, -1),
    )
