"""Dask orchestration: map a kernel over the chunks, reduce the partial sums in chunk order.

Each pass builds one small low-level graph: a task per chunk that reads the chunk (unless it is
cached) and runs a kernel from :mod:`dlr.kernel` on it, and one task that adds the chunks'
partial sums in chunk-index order. The order is fixed, so the result is bit-identical on any
scheduler and any number of workers. Only the partial sums ever reach the client.
"""

import hashlib
import logging
import sys
import uuid
from typing import NamedTuple

import dask
import dask.base
import dask.local
import dask.system
import dask.threaded
import numpy as np
from dask.optimization import cull

from dlr.errors import DataError, DlrError
from dlr.kernel import chunk_partials, chunk_summary, merge_summaries, partials_at_zero
from dlr.linalg import pin_blas_for_process, single_threaded_blas
from dlr.memory import (
    auto_budget,
    check_streaming_fits,
    human,
    memory_room,
    parse_size,
    streaming_bytes,
    worker_room,
)
from dlr.sources import Source

log = logging.getLogger("dlr")


def current_get():
    """The active dask scheduler's ``get``: a default distributed Client, dask's configured
    scheduler, or the local threaded scheduler."""
    if "distributed" not in sys.modules and dask.config.get("scheduler", None) is None:
        return dask.threaded.get  # no Client can exist; don't pay for importing distributed
    return dask.base.get_scheduler() or dask.threaded.get


def client_of(get):
    """The distributed Client behind ``get``, or None for a local scheduler."""
    if "distributed" not in sys.modules:
        return None  # no Client can exist; don't pay for importing distributed
    from distributed import Client

    owner = getattr(get, "__self__", None)
    return owner if isinstance(owner, Client) else None


class Labels(NamedTuple):
    """How raw labels become the kernel's targets, and their class weights.

    ``classes`` (K,) sorted int64; ``class_weight`` (K,) float64 or None. Two classes give the
    binary model (targets 0/1), more give the multinomial one (targets are class indices).
    """

    classes: np.ndarray
    class_weight: np.ndarray | None = None

    def encode(self, y: np.ndarray) -> np.ndarray:
        if len(self.classes) == 2:
            if self.classes[0] == 0 and self.classes[1] == 1:
                return y
            return (y == self.classes[1]).astype(np.uint8)
        return np.searchsorted(self.classes, y)

    def weigh(self, targets: np.ndarray, s: np.ndarray | None) -> np.ndarray | None:
        """Per-sample weights: sample weight × weight of the sample's class."""
        if self.class_weight is None:
            return None if s is None else np.asarray(s, dtype=np.float64)
        w = self.class_weight[np.asarray(targets, dtype=np.intp)]
        return w if s is None else w * s


def run_graph(dsk: dict, keys, get=None):
    """Compute ``keys`` of ``dsk`` on the active scheduler with BLAS pinned to one thread
    (see :func:`dlr.linalg.single_threaded_blas`)."""
    get = get or current_get()
    client = client_of(get)
    if client is not None:
        client.run(pin_blas_for_process)
        return get(dsk, keys)
    with single_threaded_blas():
        return get(dsk, keys)


def _partials_task(x, y, s, theta, labels, samples_first, hessian):
    targets = labels.encode(y)
    return chunk_partials(
        x,
        targets,
        labels.weigh(targets, s),
        theta,
        samples_first=samples_first,
        hessian=hessian,
    )


class Point(NamedTuple):
    """A point the first pass also evaluates the kernel at, while each chunk is in the CPU cache.

    ``theta`` (k, n + 1) float64 original-scale parameters [W | b] (a model's weights, known
    before the first pass), ``labels`` as the loss/gradient pass would take them, ``hessian``
    whether the Hessian is summed too.
    """

    theta: np.ndarray
    labels: Labels
    hessian: bool = False

    def covers(self, theta: np.ndarray, labels: Labels, hessian: bool) -> bool:
        """Whether a pass at ``theta`` with ``labels`` (and ``hessian``) would compute exactly
        what this point's sums hold."""
        mine, other = self.labels.class_weight, labels.class_weight
        return (
            np.array_equal(theta, self.theta)
            and theta.dtype == self.theta.dtype
            and np.array_equal(labels.classes, self.labels.classes)
            and (mine is None) == (other is None)
            and (mine is None or np.array_equal(mine, other))
            and (self.hessian or not hessian)
        )


def _summary_task(x, y, s, samples_first, context, moments, point):
    """A chunk's first-pass summary and, at ``point`` (or None), its loss/gradient partials:
    (summary, partials or None). The partials are what :func:`_partials_task` gives."""
    summary = chunk_summary(x, y, s, samples_first=samples_first, check=context, moments=moments)
    if point is None:
        return summary, None
    partials = _partials_task(x, y, s, point.theta, point.labels, samples_first, point.hessian)
    return summary, partials


def _load_task(x, y, s, samples_first, context, moments, point):
    """A chunk to keep, with its first-pass results, from one read: (x, y, s, summary, partials)."""
    return x, y, s, *_summary_task(x, y, s, samples_first, context, moments, point)


def _given(value):
    return value


def sum_in_order(parts: list[dict]) -> dict:
    """Add kernel results (dicts of arrays) in the order given: the chunk order."""
    total = {k: np.array(v, dtype=np.float64, copy=True) for k, v in parts[0].items()}
    for p in parts[1:]:
        for k, v in p.items():
            total[k] += v
    return total


class Engine:
    """Passes over a dataset's chunks: the validating first pass and the loss/gradient passes.

    Holds the chunk cache: chunks that fit in ``cache_size`` bytes are read and decoded once,
    in :meth:`__init__`, and kept (in this process on a local scheduler, in worker memory on a
    distributed cluster); the others are streamed from storage on every pass. ``moments``: the
    first pass also gives the features' means and variances (for standardizing). ``first``: a
    :class:`Point` (a warm start's weights) where the first pass also sums the loss and gradient,
    so the pass that would evaluate them there is not made (see :meth:`partials_graph`).
    """

    def __init__(
        self,
        source: Source,
        *,
        cache_size="auto",
        get=None,
        moments=False,
        first: Point | None = None,
    ):
        self.source = source
        self.moments = moments
        self.first = first
        self._first_parts: list[dict | None] = [None] * source.n_chunks
        #: the loss/gradient sums at ``first`` over all chunks, once summarized
        self.first_partials: dict | None = None
        self.get = get or current_get()
        self.client = client_of(self.get)
        if self.client is not None:
            self.client.run(pin_blas_for_process)
        self.token = uuid.uuid4().hex[:10]
        self.n_passes = 0
        self.cached_bytes = 0
        self._exprs = [source.exprs(i) for i in range(source.n_chunks)]
        self._summaries: list[dict | None] = [None] * source.n_chunks
        self.summary: dict | None = None  # the merged first-pass summary, once summarized
        self._graph = source.graph
        self._cache(self._placement(parse_size(cache_size)))

    def _placement(self, budget) -> dict:
        """Chunks to keep, {worker: [chunk, ...]} (None: this process, or anywhere for
        in-memory input): all of in-memory input, else those fitting the budget, in order.

        Checks first that streaming fits in memory — here, or on every worker — and raises
        :class:`DlrError` naming the chunk size and the limit if it does not, or if an explicit
        ``budget`` would not fit next to it. ``auto`` takes
        :data:`dlr.memory.AUTO_FRACTION` of what streaming leaves (see :mod:`dlr.memory`).
        """
        src = self.source
        if src.in_memory:
            return {None: list(range(src.n_chunks))}
        sizes = [src.chunk_nbytes(i) for i in range(src.n_chunks)]
        largest = max(range(src.n_chunks), key=sizes.__getitem__)
        rooms = rooms_of(self.get)
        left = streaming_left(src, rooms, "train")
        if budget == "auto":
            capacity = {w: auto_budget(b) for w, b in left.items()}
        else:  # an explicit size is the total over the workers
            capacity = {w: budget // len(left) for w in left}
        placement = place_chunks(sizes, capacity)
        for w, chunks in placement.items():
            kept = sum(sizes[i] for i in chunks)
            if kept > left[w]:
                where = f" on {w}" if w else ""
                raise DlrError(
                    f"not enough memory{where} for --cache-size {human(budget)}: it would keep "
                    f"{human(kept)} of decoded chunks, but {rooms[w][0].why} leaves "
                    f"{human(left[w])} after streaming; use --cache-size auto or a smaller size"
                )
        if budget == "auto":
            kept = [i for chunks in placement.values() for i in chunks]
            if self.client is None:
                room, threads = rooms[None]
                why = (
                    f"half of the {human(left[None])} that {room.why} leaves after "
                    f"{human(streaming_bytes(sizes[largest], threads))} for streaming on "
                    f"{threads} thread{'s' if threads > 1 else ''}"
                )
            else:
                least = min(capacity, key=capacity.get)
                sizes_range = sorted({human(b) for b in (capacity[least], max(capacity.values()))})
                why = (
                    f"{'–'.join(sizes_range)} on each of {len(left)} workers, half of what its "
                    f"memory leaves after streaming (least on {least}: {rooms[least][0].why})"
                )
            log.debug(
                "cache_size=auto: %d of %d chunks of %s kept in memory (%s); budget %s",
                len(kept),
                src.n_chunks,
                src.origin,
                human(sum(sizes[i] for i in kept)),
                why,
            )
        return placement

    def _cache(self, placement: dict) -> None:
        chunks = sorted(i for placed in placement.values() for i in placed)
        if not chunks:
            return
        self.cached_bytes = sum(self.source.chunk_nbytes(i) for i in chunks)
        if self.client is None:
            if self.source.in_memory:
                return  # already decoded in this process: the expressions are the arrays
            # Each chunk is summarized by the task that reads it, while it is in the CPU cache:
            # the first pass then costs no second visit (see summarize).
            keys = [(f"dlr-load-{self.token}", i) for i in chunks]
            dsk = dict(self._graph)
            for key, i in zip(keys, chunks, strict=True):
                dsk[key] = (
                    _load_task,
                    *self.source.exprs(i, streamed=False),
                    *self._summary_args(i),
                )
            for i, (*loaded, summary, partials) in zip(
                chunks, self.compute(dsk, keys), strict=True
            ):
                self._exprs[i] = tuple(loaded)
                self._summaries[i] = summary
                self._first_parts[i] = partials
            return
        futures = {}
        for worker, placed in placement.items():
            dsk, keys = dict(self._graph), []
            for i in placed:
                self._exprs[i] = self.source.exprs(i, streamed=False)
                for j, e in enumerate(self._exprs[i]):
                    if e is not None:
                        # In-memory arrays travel inside a task, not scattered: a worker that
                        # dies loses nothing the scheduler cannot recompute.
                        key = (f"dlr-cache-{self.token}-{j}", i)
                        dsk[key] = (np.asarray, e) if isinstance(e, np.ndarray) else e
                        keys.append(key)
            # The chunks a worker has room for go to that worker; the restriction is loose, so
            # if it dies they are recomputed on another.
            where = {"workers": [worker], "allow_other_workers": True} if worker else {}
            futures.update(zip(keys, self.client.get(dsk, keys, sync=False, **where), strict=True))
        for i in chunks:
            self._exprs[i] = tuple(
                futures[(f"dlr-cache-{self.token}-{j}", i)] if e is not None else None
                for j, e in enumerate(self._exprs[i])
            )

    def _run(self, name: str, task, args_of, chunks=None) -> list:
        """One pass: ``task(x, y, s, *args_of(i))`` on every chunk (or on ``chunks``), results
        in chunk order."""
        chunks = range(self.source.n_chunks) if chunks is None else chunks
        keys = [(f"dlr-{name}-{self.token}-{self.n_passes}", i) for i in chunks]
        dsk = dict(self._graph)
        for i, key in zip(chunks, keys, strict=True):
            dsk[key] = (task, *self._exprs[i], *args_of(i))
        if self._graph:  # input dask graph: keep only the tasks still needed (cache may cover some)
            dsk, _ = cull(dsk, keys)
        self.n_passes += 1
        return keys, dsk

    def _summary_args(self, i: int) -> tuple:
        return self.source.samples_first, self.source.context(i), self.moments, self.first

    def summarize(self) -> dict:
        """The first pass: validate every value and summarize the data (see
        :func:`dlr.kernel.chunk_summary`), merged in chunk order — and with ``first``, the
        kernel's sums at that point, added in chunk order as a loss/gradient pass adds them.
        Chunks loaded into the cache were summarized as they were read; only the others are
        visited here."""
        todo = [i for i, done in enumerate(self._summaries) if done is None]
        keys, dsk = self._run("summary", _summary_task, self._summary_args, todo)
        if keys:
            for i, (summary, partials) in zip(todo, self.compute(dsk, keys), strict=True):
                self._summaries[i] = summary
                self._first_parts[i] = partials
        self.summary = merge_summaries(self._summaries)
        if self.first is not None:
            self.first_partials = sum_in_order(self._first_parts)
        return self.summary

    def chunk_digests(self) -> list[str]:
        """A sha256 of what each chunk holds, from what is at hand without another pass.

        For in-memory input, of the chunk's bytes (features, labels, weights); otherwise of
        the chunk's first-pass summary (:func:`dlr.kernel.chunk_summary`: label counts, weight
        totals, per-label feature sums), so call it after :meth:`summarize`.
        """
        digests = []
        for i in range(self.source.n_chunks):
            h = hashlib.sha256()
            if self.source.in_memory:
                parts = [("xys"[j], a) for j, a in enumerate(self.source.exprs(i)) if a is not None]
            else:
                parts = sorted(self._summaries[i].items())
            for name, value in parts:
                a = np.ascontiguousarray(value)
                h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
                h.update(a)
            digests.append(h.hexdigest())
        return digests

    def partials_graph(self, theta: np.ndarray, labels: Labels, hessian: bool):
        """Graph and result key of one loss/gradient(/Hessian) pass at ``theta`` (k, n + 1).

        Two points need no pass, the graph is then a constant: at θ = 0 the loss and gradient
        follow from the first pass's per-label sums (see :func:`dlr.kernel.partials_at_zero`),
        and at the engine's ``first`` point the first pass summed them (the same bits as a
        pass: the same kernel on the same chunks, added in the same order).
        """
        if not hessian and not theta.any() and "label_sums" in (self.summary or {}):
            targets = labels.encode(self.summary["labels"])
            weights = labels.weigh(targets, None)
            total = (f"dlr-zero-{self.token}", self.n_passes)
            value = partials_at_zero(self.summary, targets, weights, theta.shape[0])
            return {total: (_given, value)}, total
        if self.first_partials is not None and self.first.covers(theta, labels, hessian):
            total = (f"dlr-first-{self.token}", self.n_passes)
            return {total: (_given, self.first_partials)}, total
        src = self.source
        keys, dsk = self._run(
            "part", _partials_task, lambda i: (theta, labels, src.samples_first, hessian)
        )
        total = (f"dlr-sum-{self.token}", self.n_passes)
        dsk[total] = (sum_in_order, keys)
        return dsk, total

    def partials(self, theta: np.ndarray, labels: Labels, hessian: bool = False) -> dict:
        """Summed kernel results over all chunks at ``theta``: one pass over the data."""
        dsk, key = self.partials_graph(theta, labels, hessian)
        return self.compute(dsk, key)

    def compute(self, dsk: dict, keys):
        """Run a graph on the scheduler; a chunk that keeps killing workers is named."""
        if self.client is None:
            return run_graph(dsk, keys, self.get)
        from distributed.scheduler import KilledWorker

        try:
            return self.get(dsk, keys)
        except KilledWorker as e:
            raise self._killed_worker_error(e) from None

    def _killed_worker_error(self, error) -> DataError:
        key = error.task
        chunk = key[1] if isinstance(key, tuple) and len(key) == 2 else None
        if not isinstance(chunk, int) or not 0 <= chunk < self.source.n_chunks:
            return DataError(f"a dlr task killed the dask workers it ran on: {error}")
        start, stop = self.source.bounds[chunk]
        return DataError(
            f"chunk {chunk} of {self.source.origin} (samples {start}–{stop - 1}) killed every "
            f"worker that ran it ({error.allowed_failures + 1} times, last on "
            f"{getattr(error.last_worker, 'address', error.last_worker)}); "
            "it probably needs more memory than a worker has: store the data in smaller chunks "
            "(dlr make-data --chunk-samples, or rechunk) or give the workers more memory"
        )


def rooms_of(get) -> dict:
    """{worker: (Room, threads)} of the scheduler ``get``: this process (worker None) on a
    local scheduler, every worker of a distributed one (see :mod:`dlr.memory`)."""
    client = client_of(get)
    if client is None:
        return {None: (memory_room(), local_threads(get))}
    return dict(sorted(client.run(worker_room).items()))


def streaming_left(source: Source, rooms: dict, task: str) -> dict:
    """{worker: bytes left} after streaming ``source``'s largest chunk on every thread of each
    of ``rooms`` (see :func:`rooms_of`); a :class:`DlrError` naming the chunk if that does not
    fit. ``task`` ("train", "predict", "evaluate") is what the error says cannot run."""
    sizes = [source.chunk_nbytes(i) for i in range(source.n_chunks)]
    largest = max(range(source.n_chunks), key=sizes.__getitem__)
    s, e = source.bounds[largest]
    chunk = f"chunk {largest} of {source.origin} (samples {s}–{e - 1})"
    return {
        w: check_streaming_fits(room, sizes[largest], threads, chunk, w or "", task=task)
        for w, (room, threads) in rooms.items()
    }


def check_fits(source: Source, task: str, get=None, rooms: dict | None = None) -> None:
    """Before a pass that streams every chunk of ``source`` (``task``: "predict" or
    "evaluate"), raise a :class:`DlrError` naming the chunk if streaming it on every thread
    would not fit in memory, here or on any worker of the active scheduler — the check
    training makes before its first pass. In-memory input needs none. ``rooms``: those of
    :func:`rooms_of`, if read already (for several sources of one pass)."""
    if not source.in_memory:
        streaming_left(source, rooms or rooms_of(get or current_get()), task)


def local_threads(get) -> int:
    """Threads a local scheduler ``get`` runs tasks on at once."""
    if get is dask.local.get_sync:
        return 1
    return dask.config.get("num_workers", None) or dask.system.CPU_COUNT


def place_chunks(sizes: list[int], capacity: dict) -> dict:
    """Where to keep chunks: {worker: [chunk, ...]} (worker None: this process).

    Chunks are taken in order and dealt round-robin to the workers (in the order of
    ``capacity``) that still have room for them, each within its ``capacity`` bytes; the first
    chunk that fits nowhere ends the cache (the rest are streamed).
    """
    room = dict(capacity)
    placed = {w: [] for w in capacity}
    workers = list(capacity)
    turn = 0
    for i, size in enumerate(sizes):
        for k in range(len(workers)):
            w = workers[(turn + k) % len(workers)]
            if size <= room[w]:
                placed[w].append(i)
                room[w] -= size
                turn = (turn + k + 1) % len(workers)
                break
        else:
            break
    return {w: chunks for w, chunks in placed.items() if chunks}


def labels_from(summary: dict, origin: str) -> np.ndarray:
    """The classes found in the first pass; at least two are needed."""
    classes = summary["labels"]
    if classes.size < 2:
        only = f"class {classes[0]}" if classes.size else "no labels"
        raise DataError(
            f"y in {origin} holds only {only} ({summary['count']} samples); "
            "training needs samples of at least two classes"
        )
    return classes
