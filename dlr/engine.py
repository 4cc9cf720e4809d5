"""Dask orchestration: map the kernel over the chunks, reduce the partial sums in chunk order.

Each evaluation builds one small low-level graph: a task per chunk that reads the chunk (unless
it is cached) and runs :func:`dlr.kernel.chunk_partials` on it, and one task that adds the
chunks' partial sums in chunk-index order. The order is fixed, so the result is bit-identical on
any scheduler and any number of workers. Only (n + 3) numbers per chunk ever reach the client.
"""

import uuid
from typing import NamedTuple

import dask
import dask.base
import dask.threaded
import numpy as np
from dask.optimization import cull

from dlr.errors import DataError
from dlr.kernel import PARTS, ChunkContext, chunk_partials
from dlr.memory import cluster_budget, local_budget, parse_size
from dlr.sources import Source


class Evaluation(NamedTuple):
    """Mean loss J, gradient dw (n,) and db at one point, from one pass over the data."""

    loss: float
    dw: np.ndarray
    db: float


def current_get():
    """The active dask scheduler's ``get``: a default distributed Client, dask's configured
    scheduler, or the local threaded scheduler."""
    return dask.base.get_scheduler() or dask.threaded.get


def client_of(get):
    """The distributed Client behind ``get``, or None for a local scheduler."""
    from distributed import Client

    owner = getattr(get, "__self__", None)
    return owner if isinstance(owner, Client) else None


def _partials(x, y, wb, samples_first, context):
    return chunk_partials(x, y, wb[:-1], float(wb[-1]), samples_first=samples_first, check=context)


def _sum_in_order(parts):
    total = np.array(parts[0], dtype=np.float64, copy=True)
    for p in parts[1:]:
        total += p
    return total


class Engine:
    """Loss and gradient of the whole dataset, one pass over its chunks per evaluation.

    Holds the chunk cache: chunks that fit in ``cache_size`` bytes are read and decoded once,
    in :meth:`__init__`, and kept (in this process on a local scheduler, in worker memory on a
    distributed cluster); the others are streamed from storage on every pass.
    """

    def __init__(self, source: Source, *, cache_size="auto", get=None):
        if source.y is None:
            raise DataError(f"{source.origin} has no labels; training needs y")
        self.source = source
        self.get = get or current_get()
        self.client = client_of(self.get)
        self.token = uuid.uuid4().hex[:10]
        self.n_passes = 0
        self.checked = False
        self.cached_bytes = 0
        self._exprs = [(source.x.expr(i), source.y.expr(i)) for i in range(source.n_chunks)]
        self._graph = {**source.x.graph, **source.y.graph}
        self._cache(self._cached_chunks(parse_size(cache_size)))

    def _cached_chunks(self, budget) -> list[int]:
        """Chunks to keep: all of in-memory input, else those fitting the budget, in order."""
        src = self.source
        if src.x.in_memory and src.y.in_memory:
            return list(range(src.n_chunks))
        if budget == "auto":
            budget = cluster_budget(self.client) if self.client else local_budget()
        chosen, used = [], 0
        for i in range(src.n_chunks):
            used += src.chunk_nbytes(i)
            if used > budget:
                break
            chosen.append(i)
        return chosen

    def _cache(self, chunks: list[int]) -> None:
        if not chunks:
            return
        self.cached_bytes = sum(self.source.chunk_nbytes(i) for i in chunks)
        if self.client is None:
            if self.source.x.in_memory and self.source.y.in_memory:
                return  # already decoded in this process: the expressions are the arrays
            keys = [(f"dlr-load-{self.token}", i) for i in chunks]
            dsk = {
                **self._graph,
                **{k: (tuple, list(self._exprs[i])) for k, i in zip(keys, chunks, strict=True)},
            }
            for i, xy in zip(chunks, self.get(dsk, keys), strict=True):
                self._exprs[i] = xy
            return
        xkeys = [(f"dlr-x-{self.token}", i) for i in chunks]
        ykeys = [(f"dlr-y-{self.token}", i) for i in chunks]
        dsk = dict(self._graph)
        for i, kx, ky in zip(chunks, xkeys, ykeys, strict=True):
            dsk[kx], dsk[ky] = self._scatter_if_literal(self._exprs[i])
        futures = self.client.get(dsk, xkeys + ykeys, sync=False)
        for j, i in enumerate(chunks):
            self._exprs[i] = (futures[j], futures[len(chunks) + j])

    def _scatter_if_literal(self, xy):
        return tuple(
            self.client.scatter(e, hash=False) if isinstance(e, np.ndarray) else e for e in xy
        )

    def partials(self, w: np.ndarray, b: float) -> np.ndarray:
        """Summed kernel results (n + 3,) over all chunks at (w, b): one pass over the data.

        The first pass also validates every value (finite features, labels in {0, 1}).
        """
        src = self.source
        it = self.n_passes
        wkey = (f"dlr-w-{self.token}", it)
        pkey = f"dlr-part-{self.token}-{it}"
        skey = (f"dlr-sum-{self.token}", it)
        dsk = dict(self._graph)
        dsk[wkey] = np.append(np.asarray(w, dtype=np.float64), float(b))
        for i, (xe, ye) in enumerate(self._exprs):
            start, stop = src.bounds[i]
            ctx = None if self.checked else ChunkContext(src.origin, i, start, stop)
            dsk[(pkey, i)] = (_partials, xe, ye, wkey, src.samples_first, ctx)
        dsk[skey] = (_sum_in_order, [(pkey, i) for i in range(src.n_chunks)])
        if self._graph:  # input dask graph: keep only the tasks still needed (cache may cover some)
            dsk, _ = cull(dsk, [skey])
        total = self.get(dsk, skey)
        self.n_passes += 1
        if not self.checked:
            self._check_classes(total[src.n_features + PARTS["sum_y"]])
            self.checked = True
        return total

    def _check_classes(self, n_positive: float) -> None:
        m = self.source.n_samples
        if n_positive == 0 or n_positive == m:
            label = 1 if n_positive else 0
            raise DataError(
                f"y in {self.source.origin} holds only class {label} ({m} samples); "
                "training needs samples of both classes 0 and 1"
            )

    def evaluate(self, w: np.ndarray, b: float) -> Evaluation:
        """J(w, b), dw = X·dZᵀ/m (n,) and db = ΣdZ/m, from one pass."""
        n, m = self.source.n_features, self.source.n_samples
        total = self.partials(w, b)
        return Evaluation(
            total[n + PARTS["sum_loss"]] / m, total[:n] / m, total[n + PARTS["sum_dz"]] / m
        )
