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


def histogram(x: np.ndarray, edges: Edges) -> np.ndarray:
    """(n, bins) counts of the rows ``x`` (m, n) on ``edges``."""
    x = np.asarray(x, dtype=np.float64)
    n, bins = x.shape[1], edges.bins
    width = edges.width
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(width > 0, (x - edges.lo) / np.where(width > 0, width, 1), 0)
    index = np.clip(np.floor(scaled), 0, bins - 1).astype(np.intp)
    flat = (index + np.arange(n) * bins).ravel()
    return np.bincount(flat, minlength=n * bins).reshape(n, bins).astype(np.int64)


def of_rows(x: np.ndarray, y: np.ndarray, edges: Edges | None = None) -> Summary:
    """The summary of rows ``x`` (m, n) with classes ``y`` (m,); histograms only with
    ``edges``."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] == 0:
        return empty(x.shape[1], edges)
    mean = x.mean(axis=0)
    labels, counts = np.unique(np.asarray(y), return_counts=True)
    return Summary(
        x.shape[0],
        mean,
        ((x - mean) ** 2).sum(axis=0),
        x.min(axis=0),
        x.max(axis=0),
        dict(zip(labels.tolist(), counts.tolist(), strict=True)),
        None if edges is None else histogram(x, edges),
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
    :func:`block_rows` rows and merged in order (the same bits whatever the batches)."""

    def __init__(self, n: int, edges: Edges | None):
        self.edges, self.block = edges, block_rows(n)
        self.total = empty(n, edges)
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending_rows = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Rows ``x`` (m, n), classes ``y`` (m,)."""
        if len(y):
            self.pending.append((x, y))
            self.pending_rows += len(y)
        if self.pending_rows >= self.block:
            self._summarize(self.pending_rows // self.block * self.block)

    def result(self) -> Summary:
        """The summary of every row added."""
        if self.pending_rows:
            self._summarize(self.pending_rows)
        return self.total

    def _summarize(self, rows: int) -> None:
        x = np.concatenate([p[0] for p in self.pending])
        y = np.concatenate([p[1] for p in self.pending])
        for start in range(0, rows, self.block):
            stop = min(start + self.block, rows)
            self.total = _merge2(self.total, of_rows(x[start:stop], y[start:stop], self.edges))
        self.pending = [(x[rows:], y[rows:])] if rows < len(y) else []
        self.pending_rows = len(y) - rows


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
