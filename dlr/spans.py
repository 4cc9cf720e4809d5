"""Ingest, exactly once: each new batch of data becomes a write-once, content-named *span*.

A batch (one SOURCE: a file, a directory of files, a zarr group; see :mod:`dlr.tables`) is
streamed record batch by record batch. Every record batch is checked against the registry's
schema — fixed at the first ingest: feature names and order, label column, optional sample
weight column, and the type of each — and refused, naming the file, column and row, for a
missing, extra or retyped column, a missing value, NaN or inf, a non-integer label or a negative
weight. Rows are written, chunk by chunk, as two dlr datasets (:func:`dlr.dataset.codecs`:
checksummed chunks): the train rows and the *fresh holdout*, the rows whose content hash falls
below ``holdout_fraction`` (:func:`holdout_mask`: deterministic, independent of file names and
batch boundaries, so a row is held out forever). Each group also gets ``summary.json``, the
:class:`dlr.summary.Summary` of its rows (moments, range, class counts, histograms on the
registry's drift edges: :mod:`dlr.spansummary`), counted from the batches as they stream by.
The drift edges are fixed at the registry's first ingest: ``drift_bins`` equal-width bins per
feature over the range of all its rows. When every SOURCE is Parquet whose statistics declare
each feature's range (:func:`dlr.tables.declared_ranges`, as pyarrow, Spark and most writers
do), the histograms are counted on the declared range as the rows stream by, and kept if the
rows' own range is the declared one; otherwise (no statistics, or other than the rows) that
ingest counts its histograms on the rows' range by reading its staged spans back once.

The span id is the sha256 of the schema (without its drift edges) and the rows (computed
while writing), so the same content under any file name is the same span. Spans are written
under temporary names (locally, each whole chunk by :mod:`dlr.encode`'s direct writer, the
bytes zarr would write, and each chunk file fsynced on a thread of its own once written);
then, holding the registry lease, ingest renames (or, on object storage, copies) them to
``spans/<id>`` and ``holdout/<id>`` and rewrites ``spans.json`` atomically (on object storage
also a compare-and-swap, :meth:`Registry.update_span_entries`) — the commit, which carries the
ingest's history event (its file follows). An interrupted ingest leaves nothing visible, and
no event; rerunning it completes it. A span already committed changes nothing. All SOURCEs of
one call are committed together or not at all.
"""

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import zarr

from dlr.atomic import fsync_file
from dlr.dataset import SAMPLES_FIRST, codecs
from dlr.encode import chunk_path, direct_writer
from dlr.errors import DataError, DlrError
from dlr.lease import COMMAND_TTL, Lease, default_owner
from dlr.pause import pause_point
from dlr.registry import Registry, now_iso
from dlr.spansummary import DEFAULT_BINS, summary_bytes
from dlr.summary import Accumulator, Edges, Summary, histogram, merge
from dlr.tables import declared_ranges, read_batches

#: Default rows per chunk of a span: about this many bytes of features.
CHUNK_BYTES = 8 << 20

#: Chunk writes a span's writer may have outstanding while the next batch is read and checked.
WRITES_AHEAD = 4
#: Threads compressing and writing chunks (of different chunks, in parallel).
WRITERS = 2
#: Arrays a source's batches are stacked into in turn: a batch's is reused once the content
#: hash and the split of the batch this many before it are done.
STACKED = WRITES_AHEAD + 2

_SEED = np.uint64(0x9E3779B97F4A7C15)


class IngestResult(NamedTuple):
    """One SOURCE's outcome; ``created`` is False if the same content was already committed
    (then ``duplicate_of`` names the source it was committed from)."""

    id: str
    source: str
    rows: int
    created: bool
    train_rows: int
    holdout_rows: int
    duplicate_of: str | None


def ingest(
    sources: list[str],
    registry: Registry,
    *,
    label: str | None = None,
    features: list[str] | None = None,
    sample_weight: str | None = None,
    holdout_fraction: float = 0.1,
    chunk_samples: int | None = None,
    drift_bins: int | None = None,
    storage_options: dict | None = None,
    lease: Lease | None = None,
    lease_wait: float = 60.0,
) -> list[IngestResult]:
    """Ingest each of ``sources`` as a span of ``registry`` (see the module docstring).

    ``label``, ``features`` (default: every other column, in file order), ``sample_weight``
    and ``drift_bins`` (default :data:`dlr.spansummary.DEFAULT_BINS`) fix the schema at the
    first ingest and must agree with it later.
    ``storage_options`` open the sources (the registry has its own). The commit holds the
    registry ``lease`` if given, else acquires one (waiting up to ``lease_wait`` seconds).
    """
    if not 0 <= holdout_fraction < 1:
        raise DlrError(f"--holdout-fraction must be in [0, 1), got {holdout_fraction}")
    if not sources:
        raise DlrError("nothing to ingest: give at least one SOURCE")
    if chunk_samples is not None and chunk_samples < 1:
        raise DlrError(f"--chunk-samples must be at least 1, got {chunk_samples}")
    if drift_bins is not None and drift_bins < 2:
        raise DlrError(f"--drift-bins must be at least 2, got {drift_bins}")
    schema = registry.fixed_schema()
    first_ingest = schema is None
    if first_ingest:
        edges = None  # until the first batch fixes the features: then declared ones, if any
    else:
        _check_drift_bins(schema, drift_bins, registry.url)
        edges = Edges.from_json(schema.get("drift"))
    bins = drift_bins or DEFAULT_BINS
    staged: list[_Staged] = []
    workspace = _Workspace()
    flusher = _Flusher() if registry.store.local else None
    try:
        for source in sources:
            batches = read_batches(str(source), chunk_samples or 65536, storage_options)
            first = next(batches, None)
            if first is None:
                raise DataError(f"'{source}' holds no rows")
            schema = _schema(schema, first[2].schema, first[0], label, features, sample_weight)
            if first_ingest and not staged:
                edges = _declared_edges(sources, schema, bins, storage_options)
            staged.append(
                _stage(
                    registry,
                    str(source),
                    _chain(first, batches),
                    schema,
                    edges,
                    first_ingest,
                    holdout_fraction,
                    chunk_samples,
                    workspace,
                    flusher,
                )
            )
        if flusher is not None:
            flusher.close()  # the commit fsyncs the trees: what was flushed is quick
        if first_ingest:
            schema, staged = _fix_edges(registry, schema, staged, bins, edges)
        for s in staged:
            _keep_summaries(registry, s, Edges.from_json(schema.get("drift")))
        pause_point("before-commit")
        if lease is not None:
            return _commit(registry, staged, schema, lease)
        with Lease.acquire(
            registry,
            owner=default_owner(),
            run_key=f"ingest-{os.getpid()}",
            ttl=COMMAND_TTL,
            wait=lease_wait,
        ) as held:
            return _commit(registry, staged, schema, held)
    finally:
        if flusher is not None:
            flusher.close()
        for s in staged:
            for key in (s.train_key, s.holdout_key):
                registry.store.delete(key)  # published ones were moved away already


def _chain(first, rest):
    yield first
    yield from rest


class _Staged(NamedTuple):
    id: str
    source: str
    rows: int
    train_rows: int
    holdout_rows: int
    train_key: str
    holdout_key: str
    holdout_fraction: float
    chunk_samples: int
    train_summary: Summary | None = None  # None: not counted (no drift edges yet)
    holdout_summary: Summary | None = None


# schema ----------------------------------------------------------------------------------------
def _schema(
    fixed: dict | None,
    arrow: pa.Schema,
    file: str,
    label: str | None,
    features: list[str] | None,
    sample_weight: str | None,
) -> dict:
    """The registry's schema, or the one this first batch fixes (checked against the options)."""
    if fixed is not None:
        for given, key, what in (
            (label, "label", "--label"),
            (sample_weight, "sample_weight", "--sample-weight"),
        ):
            if given is not None and given != fixed[key]:
                raise DataError(
                    f"{what} {given} disagrees with the registry's schema ({key} "
                    f"{fixed[key]!r}, fixed at its first ingest)"
                )
        if features is not None and list(features) != fixed["features"]:
            raise DataError(
                f"--features {','.join(features)} disagrees with the registry's schema "
                f"(features {','.join(fixed['features'])}, fixed at its first ingest)"
            )
        return fixed
    names = arrow.names
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"'{file}' has duplicate column names: {', '.join(dupes)}")
    if label is None:
        raise DataError(
            f"the first ingest into a registry fixes its schema: name the label column with "
            f"--label (columns of '{file}': {', '.join(names)})"
        )
    wanted = [label] + ([sample_weight] if sample_weight else []) + list(features or [])
    for column in wanted:
        if column not in names:
            raise DataError(f"'{file}' has no column '{column}' (columns: {', '.join(names)})")
    if features is None:
        features = [n for n in names if n not in (label, sample_weight)]
    if not features:
        raise DataError(f"'{file}' has no feature columns besides the label")
    types = {n: arrow.field(n).type for n in names}
    for column in features + ([sample_weight] if sample_weight else []):
        t = types[column]
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            raise DataError(f"'{file}', column '{column}': type {t}; expected numbers")
    t = types[label]
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        raise DataError(f"'{file}', label column '{label}': type {t}; expected integer classes")
    single = all(types[f] in (pa.float32(), pa.float16()) for f in features)
    columns = list(features) + [label] + ([sample_weight] if sample_weight else [])
    return {
        "features": list(features),
        "label": label,
        "sample_weight": sample_weight,
        "dtypes": {c: str(types[c]) for c in columns},
        "x_dtype": "float32" if single else "float64",
    }


def _check_drift_bins(fixed: dict, drift_bins: int | None, url: str) -> None:
    """--drift-bins must agree with the bins fixed at the registry's first ingest."""
    if drift_bins is None:
        return
    drift = fixed.get("drift")
    if drift is None:
        raise DataError(
            f"--drift-bins: the registry '{url}' is from before drift bins were fixed at "
            f"ingest; its next `dlr retrain` fixes {DEFAULT_BINS} bins from its oldest span"
        )
    if drift["bins"] != drift_bins:
        raise DataError(
            f"--drift-bins {drift_bins} disagrees with the registry's schema (drift bins "
            f"{drift['bins']}, fixed at its first ingest)"
        )


def _declared_edges(sources: list, schema: dict, bins: int, storage_options) -> Edges | None:
    """``bins`` bins over the feature ranges the Parquet statistics of all ``sources`` declare
    (:func:`dlr.tables.declared_ranges`), or None where one declares none."""
    lo, hi = np.full(len(schema["features"]), np.inf), np.full(len(schema["features"]), -np.inf)
    for source in sources:
        ranges = declared_ranges(str(source), schema["features"], storage_options)
        if ranges is None:
            return None
        a, b = np.asarray(ranges, dtype=np.float64).T.astype(schema["x_dtype"])
        np.minimum(lo, a, out=lo)
        np.maximum(hi, b, out=hi)
    return Edges(bins, lo, hi)


def _fix_edges(registry: Registry, schema: dict, staged: list, bins: int, declared: Edges | None):
    """The first ingest's schema with its drift edges — ``bins`` bins over the range of all
    its staged rows — and its staged spans with their histograms on them: those counted as
    they streamed by on the ``declared`` edges if these are the rows' range (the histogram of
    a value on edges whose ends differ only in the sign of a zero is the same), else counted by
    reading the staged groups back chunk by chunk (once in the registry's life)."""
    edges = Edges.spanning(
        merge([x for s in staged for x in (s.train_summary, s.holdout_summary)]), bins
    )
    schema = {**schema, "drift": edges.to_json()}
    if (
        declared is not None
        and np.array_equal(declared.lo, edges.lo)
        and np.array_equal(declared.hi, edges.hi)
    ):
        return schema, staged

    def counted(key: str, summary: Summary) -> Summary:
        x = _open_group(registry, key, "r")["X"]
        counts = np.zeros((x.shape[1], bins), dtype=np.int64)
        step = x.chunks[0]
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # decoding and NumPy drop the GIL
            for part in pool.map(
                lambda start: histogram(x[start : start + step], edges),
                range(0, x.shape[0], step),
            ):
                counts += part
        return summary.with_hist(counts)

    staged = [
        s._replace(
            train_summary=counted(s.train_key, s.train_summary),
            holdout_summary=counted(s.holdout_key, s.holdout_summary),
        )
        for s in staged
    ]
    return schema, staged


def _keep_summaries(registry: Registry, s: "_Staged", edges: Edges | None) -> None:
    """Write the summaries of a staged span into its groups (published with them)."""
    if s.train_summary is None or s.train_summary.hist is None:
        return  # a registry from before drift edges: its next retrain computes them
    try:
        for key, summary in ((s.train_key, s.train_summary), (s.holdout_key, s.holdout_summary)):
            registry.store.write(f"{key}/summary.json", summary_bytes(summary, edges))
    except OSError as e:
        raise DlrError(
            f"cannot write the span of '{s.source}' into '{registry.url}': "
            f"{e.strerror or e}; nothing was committed"
        ) from None


def _check(
    batch: pa.RecordBatch,
    schema: dict,
    file: str,
    offset: int,
    out: np.ndarray,
    through: np.ndarray,
):
    """(X (m, n) in the schema's dtype, stacked into ``out`` (m, n) through ``through`` (n, m),
    y (m,) int64, w (m,) float64 or None, and X's n columns (m,) as they were before being
    stacked) of a batch, or a DataError naming file, column and row."""
    features, label, weight = schema["features"], schema["label"], schema["sample_weight"]
    expected = [*features, label] + ([weight] if weight else [])
    names = batch.schema.names
    for column in expected:
        if column not in names:
            raise DataError(
                f"'{file}': column '{column}' is missing (the registry's schema, fixed at its "
                f"first ingest, has columns {', '.join(expected)})"
            )
    for column in names:
        if column not in expected:
            raise DataError(
                f"'{file}': column '{column}' is not in the registry's schema (columns "
                f"{', '.join(expected)}, fixed at its first ingest)"
            )
    for column in expected:
        got, want = str(batch.column(column).type), schema["dtypes"][column]
        if got != want:
            raise DataError(
                f"'{file}': column '{column}' has type {got}; the registry's schema has {want}"
            )
        array = batch.column(column)
        if array.null_count:
            row = int(np.argmax(pc.is_null(array).to_numpy(zero_copy_only=False)))
            raise DataError(f"'{file}', column '{column}', row {offset + row}: missing value")
    x_dtype = np.dtype(schema["x_dtype"])
    columns = [
        batch.column(c).to_numpy(zero_copy_only=False).astype(x_dtype, copy=False) for c in features
    ]
    for row, column in zip(through, columns, strict=True):
        np.copyto(row, column)
    np.copyto(out, through.T)
    X = out
    # a NaN or inf anywhere makes the sum one (so may an overflow: then look value by value)
    if not np.isfinite(np.add.reduce(X, axis=None)):
        finite = np.isfinite(X)
        if not finite.all():
            row, j = (int(i) for i in np.argwhere(~finite)[0])
            raise DataError(
                f"'{file}', column '{features[j]}', row {offset + row}: {X[row, j]}; features "
                "must be finite (no NaN or inf)"
            )
    raw = batch.column(label).to_numpy(zero_copy_only=False)
    if raw.dtype.kind == "f":
        bad = ~(np.isfinite(raw) & (raw == np.round(raw)))
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(
                f"'{file}', column '{label}', row {offset + row}: label {raw[row]} is not an "
                "integer class"
            )
    y = raw.astype(np.int64, copy=False)
    w = None
    if weight:
        w = batch.column(weight).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = ~(np.isfinite(w) & (w >= 0))
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(
                f"'{file}', column '{weight}', row {offset + row}: sample weight {w[row]}; "
                "weights must be finite and ≥ 0"
            )
    return X, y, w, columns


# holdout ---------------------------------------------------------------------------------------
def _mix(h: np.ndarray, t: np.ndarray) -> None:
    """splitmix64's finalizer on ``h`` in place (every output bit depends on every input
    bit); ``t`` is scratch of the same shape."""
    np.right_shift(h, np.uint64(30), out=t)
    h ^= t
    h *= np.uint64(0xBF58476D1CE4E5B9)
    np.right_shift(h, np.uint64(27), out=t)
    h ^= t
    h *= np.uint64(0x94D049BB133111EB)
    np.right_shift(h, np.uint64(31), out=t)
    h ^= t


def holdout_mask(X: np.ndarray, y: np.ndarray, w: np.ndarray | None, fraction: float):
    """Which rows belong to the fresh holdout: a 64-bit hash of each row's values (features,
    label, weight as float64), read as a number in [0, 1), is below ``fraction``.

    It depends only on the row itself, so the split is the same whatever the file name, the
    batch boundaries, or where the row sits in its file. ``X``: (m, n); returns (m,) bool.
    """
    return _holdout_mask([X[:, j] for j in range(X.shape[1])], y, w, fraction)


def _holdout_mask(columns, y: np.ndarray, w: np.ndarray | None, fraction: float):
    """:func:`holdout_mask` of the rows whose features are ``columns`` (n arrays (m,)): read
    one contiguous column at a time, they cost one pass over the features, where each strided
    column of a row-major X touches a cache line of every row."""
    if fraction == 0:
        return np.zeros(len(y), dtype=bool)
    h = np.full(len(y), _SEED, dtype=np.uint64)
    t = np.empty_like(h)
    bits = np.empty(len(y), dtype=np.float64)
    for column in [*columns, y] + ([w] if w is not None else []):
        np.add(column, 0.0, out=bits)  # as float64; + 0.0 makes -0.0 and 0.0 the same value
        h ^= bits.view(np.uint64)
        _mix(h, t)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53 < fraction


# writing ---------------------------------------------------------------------------------------
def _open_group(registry: Registry, key: str, mode: str) -> zarr.Group:
    """The zarr group at ``key`` of the registry's store (a staged span), opened in ``mode``."""
    store = registry.store
    url = store.path(key) if store.local else store.url_of(key)
    options = None if store.local else registry.storage_options
    return zarr.open_group(url, mode=mode, storage_options=options)


class _GroupWriter:
    """Appends rows to a new dlr dataset group, one whole chunk at a time.

    Rows are gathered straight into ``buffers``, :data:`WRITES_AHEAD` + 1 reused chunk buffers
    (:meth:`_Workspace.chunk_buffers`: one copy of each row, no temporaries). A full buffer is
    compressed and written by ``writer``, an executor the caller owns and shares between the
    groups of one source (chunks of an array are written in parallel, whole ones of a local
    store by the direct writer, :mod:`dlr.encode`; its metadata changes only while none of its
    writes is in flight), and its rows' ``summary`` counted by
    ``summarizer``, a one-thread executor (so each :class:`dlr.summary.Accumulator` sees its
    rows in order), while the caller goes on. A buffer is filled again only once its write and
    its count are done, which bounds the rows held in memory; an error of a write (a full disk)
    comes out of the next :meth:`append` or :meth:`close`.
    """

    def __init__(
        self,
        registry: Registry,
        key: str,
        schema: dict,
        chunk_samples: int,
        writer,
        summary: Accumulator | None,
        summarizer,
        buffers: list,
        flusher: "_Flusher | None",
    ):
        n = len(schema["features"])
        group = _open_group(registry, key, "w")
        self.directory = registry.store.path(key) if flusher is not None else None
        group.attrs["dlr"] = {"kind": "span", "features": schema["features"]}
        self.c = chunk_samples
        self.x = group.create_array(
            "X",
            shape=(0, n),
            chunks=(chunk_samples, n),
            dtype=schema["x_dtype"],
            dimension_names=SAMPLES_FIRST,
            **codecs(),
        )
        self.y = group.create_array(
            "y", shape=(0,), chunks=(chunk_samples,), dtype="int64", **codecs()
        )
        self.w = None
        if schema["sample_weight"]:
            self.w = group.create_array(
                "w", shape=(0,), chunks=(chunk_samples,), dtype="float64", **codecs()
            )
        self.arrays = {
            k: a for k, a in (("X", self.x), ("y", self.y), ("w", self.w)) if a is not None
        }
        direct = {
            name: direct_writer(a, os.path.join(self.directory, name))
            for name, a in self.arrays.items()
            if self.directory is not None
        }
        # whole chunks written by dlr's direct writer where it writes every array as zarr
        # would (a local store; see dlr.encode), else by zarr
        self.direct = direct if direct and all(direct.values()) else None
        self.buffers = buffers
        self.busy: list[list] = [[] for _ in self.buffers]  # the futures using each buffer
        self.current, self.filled = 0, 0
        self.rows = 0
        self.writer, self.flusher = writer, flusher
        self.summary, self.summarizer = summary, summarizer

    def append(self, X, y, w, rows: np.ndarray) -> None:
        """Add the rows ``rows`` (indices into X (m, n), y (m,), w (m,) or None, ascending);
        every chunk they complete is written at once."""
        done = 0
        while done < len(rows):
            bx, by, bw = self.buffers[self.current]
            k = min(self.c - self.filled, len(rows) - done)
            part, into = rows[done : done + k], slice(self.filled, self.filled + k)
            np.take(X, part, axis=0, out=bx[into], mode="clip")  # "clip": unbuffered
            np.take(y, part, out=by[into], mode="clip")
            if bw is not None:
                np.take(w, part, out=bw[into], mode="clip")
            self.filled += k
            done += k
            if self.filled == self.c:
                self._submit()

    def close(self) -> None:
        """Write the last, partial chunk and wait until every write and count is done."""
        if self.filled:
            self._submit()
        self._wait()
        if self.x.shape[0] != self.rows:  # its final length (no chunk was written past it)
            self._resize(self.rows)

    def _submit(self) -> None:
        """Hand the current buffer's rows to the writer and the summarizer, and move on to the
        next buffer once it is free."""
        bx, by, bw = (None if a is None else a[: self.filled] for a in self.buffers[self.current])
        start, stop = self.rows, self.rows + self.filled
        if stop > self.x.shape[0]:
            # grown here, with no write of this group in flight (writes run in parallel, and
            # a resize rewrites the arrays' metadata): to twice their length at least, so
            # that happens a few times, not at every chunk (close gives the final length)
            self._wait()
            self._resize(max(stop, 2 * self.x.shape[0]))
        futures = [self.writer.submit(self._write, start, stop, bx, by, bw)]
        if self.summary is not None:
            futures.append(self.summarizer.submit(self.summary.add, bx, by))
        self.busy[self.current] = futures
        self.rows, self.filled = stop, 0
        self.current = (self.current + 1) % len(self.buffers)
        while self.busy[self.current]:
            self.busy[self.current].pop(0).result()

    def _write(self, start: int, stop: int, X, y, w) -> None:
        """Write rows [start, stop) — one chunk: whole, or the last rows — of arrays long
        enough (a writer's thread)."""
        i = start // self.c
        blocks = {"X": X, "y": y, "w": w}
        for name, a in self.arrays.items():
            if self.direct is not None and stop - start == self.c:
                self.direct[name].write(i, blocks[name])
            else:
                a[start:stop] = blocks[name]
        if self.flusher is not None:
            self.flusher.flush(
                chunk_path(a, os.path.join(self.directory, name), i)
                for name, a in self.arrays.items()
            )

    def _wait(self) -> None:
        """Until every write and count of this group is done (raising the first error)."""
        for futures in self.busy:
            while futures:
                futures.pop(0).result()

    def _resize(self, rows: int) -> None:
        self.x.resize((rows, self.x.shape[1]))
        for a in (self.y, self.w):
            if a is not None:
                a.resize((rows,))


class _Workspace:
    """The arrays one ingest call reuses for all its SOURCEs, so that their pages are touched
    once, not once per SOURCE or per batch (on a virtual machine a fresh page costs a fault of
    several microseconds): per group its chunk buffers and its summary's buffers, the ring of
    :data:`STACKED` arrays the batches' rows are stacked into, and the one they are stacked
    through (:meth:`through`)."""

    def __init__(self):
        self.chunks: dict = {}
        self.accumulators: dict = {}
        self.stacked: list = [None] * STACKED
        self.transposing: np.ndarray | None = None

    def chunk_buffers(self, group: str, schema: dict, rows: int) -> list:
        """:data:`WRITES_AHEAD` + 1 buffers (X (rows, n), y (rows,), w (rows,) or None) for
        ``group``'s chunks (np.empty: a page is touched only when rows reach it)."""
        n, dtype, weighted = len(schema["features"]), schema["x_dtype"], schema["sample_weight"]
        key = group, n, dtype, rows, bool(weighted)
        if key not in self.chunks:
            self.chunks[key] = [
                (
                    np.empty((rows, n), dtype=dtype),
                    np.empty(rows, dtype=np.int64),
                    np.empty(rows, dtype=np.float64) if weighted else None,
                )
                for _ in range(WRITES_AHEAD + 1)
            ]
        return self.chunks[key]

    def accumulator(self, group: str, n: int, edges: Edges | None) -> Accumulator:
        """A new summary for ``group``, in the buffers of its last one (which must be done)."""
        acc = Accumulator(n, edges, reuse=self.accumulators.get(group))
        self.accumulators[group] = acc
        return acc

    def stack(self, slot: int, rows: int, n: int, dtype) -> np.ndarray:
        """An (rows, n) array of ``dtype`` in ring slot ``slot`` (whose last user must be
        done)."""
        a = self.stacked[slot]
        if a is None or a.shape[0] < rows or a.shape[1] != n or a.dtype != dtype:
            a = self.stacked[slot] = np.empty((rows, n), dtype=dtype)
        return a[:rows]

    def through(self, rows: int, n: int, dtype) -> np.ndarray:
        """An (n, rows) array of ``dtype`` that the main thread stacks each batch through: its
        columns copied in one by one, then the whole transposed into the batch's (rows, n)
        array in one copy, which NumPy does tile by tile (about five times faster than
        writing each column into every row's cache line in turn, as ``np.stack`` does)."""
        a = self.transposing
        if a is None or a.shape[1] < rows or a.shape[0] != n or a.dtype != dtype:
            a = self.transposing = np.empty((n, rows), dtype=dtype)
        return a[:, :rows]


class _Flusher:
    """fsyncs written chunk files on a thread of its own, while ingest goes on: the data goes
    to disk beside the work instead of all at once in the commit's fsync of the tree (which
    still makes it durable, and reports its errors; one here is left to it)."""

    def __init__(self):
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="dlr-ingest-flush")

    def flush(self, paths) -> None:
        self.pool.submit(_fsync_quietly, list(paths))

    def close(self) -> None:
        """Stop: drop the flushes not started, wait for the one running."""
        self.pool.shutdown(wait=True, cancel_futures=True)


def _fsync_quietly(paths: list[str]) -> None:
    for path in paths:
        try:
            fsync_file(path)
        except OSError:
            pass  # deleted meanwhile (a failed ingest), or left to the commit's fsync


class _Lane:
    """A one-thread executor whose jobs run in the order given, at most :data:`WRITES_AHEAD`
    of them outstanding (:meth:`submit` waits for the oldest past that, and raises its
    error)."""

    def __init__(self, name: str):
        self.pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.outstanding: list = []

    def submit(self, fn, *args):
        """Run ``fn(*args)`` after the jobs before it; returns its future."""
        future = self.pool.submit(fn, *args)
        self.outstanding.append(future)
        while len(self.outstanding) > WRITES_AHEAD:
            self.outstanding.pop(0).result()
        return future

    def drain(self) -> None:
        """Wait for every job (raising the first error)."""
        while self.outstanding:
            self.outstanding.pop(0).result()

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _hash_rows(hashes, X, y, w) -> None:
    """Add a batch's X, y and w (if any), little-endian, to their sha256 (hashlib releases
    the GIL: this runs beside the reading and writing)."""
    for h, a in zip(hashes, (X, y, w), strict=True):
        if a is not None:
            h.update(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).data)


def _stage(
    registry: Registry,
    source: str,
    batches,
    schema: dict,
    edges: Edges | None,
    first_ingest: bool,
    holdout_fraction: float,
    chunk_samples: int | None,
    workspace: _Workspace,
    flusher: _Flusher | None,
) -> _Staged:
    """Write one SOURCE as staged train and holdout groups; hash and summarize its content
    meanwhile (histograms only on ``edges``: the schema's drift edges, or at the first ingest
    the declared ones or none; a registry from before drift edges keeps no summaries)."""
    n = len(schema["features"])
    c = chunk_samples or max(1, CHUNK_BYTES // (n * np.dtype(schema["x_dtype"]).itemsize))
    store = registry.store
    prefix = ("spans", "holdout") if store.local else ("staging", "staging")
    keys = store.temp_key(prefix[0]), store.temp_key(prefix[1])
    staged = _Staged("", source, 0, 0, 0, *keys, holdout_fraction, c)
    hashes = [hashlib.sha256() for _ in range(3)]
    summarize = edges is not None or first_ingest
    writer = ThreadPoolExecutor(WRITERS, thread_name_prefix="dlr-ingest-write")
    summarizer = ThreadPoolExecutor(1, thread_name_prefix="dlr-ingest-summary")
    # beside the main thread's reading and checking: the content's sha256, and the holdout
    # split with the rows' copies into the chunk buffers (NumPy and hashlib release the GIL)
    hasher, splitter = _Lane("dlr-ingest-hash"), _Lane("dlr-ingest-split")
    try:
        try:
            train, holdout = (
                _GroupWriter(
                    registry,
                    key,
                    schema,
                    c,
                    writer,
                    workspace.accumulator(group, n, edges) if summarize else None,
                    summarizer,
                    workspace.chunk_buffers(group, schema, c),
                    flusher,
                )
                for group, key in zip(("train", "holdout"), keys, strict=True)
            )

            def split(X, y, w, columns) -> None:
                held = _holdout_mask(columns, y, w, holdout_fraction)
                train.append(X, y, w, np.flatnonzero(~held))
                holdout.append(X, y, w, np.flatnonzero(held))

            rows, dtype = 0, np.dtype(schema["x_dtype"])
            readers: list[list] = [[] for _ in range(STACKED)]  # the jobs reading each slot
            for i, (file, offset, batch) in enumerate(batches):
                slot = i % STACKED
                for future in readers[slot]:
                    future.result()
                out = workspace.stack(slot, batch.num_rows, n, dtype)
                through = workspace.through(batch.num_rows, n, dtype)
                X, y, w, columns = _check(batch, schema, file, offset, out, through)
                readers[slot] = [
                    hasher.submit(_hash_rows, hashes, X, y, w),
                    splitter.submit(split, X, y, w, columns),
                ]
                rows += len(y)
            splitter.drain()
            train.close()
            holdout.close()
            hasher.drain()
        finally:  # no write may still run when the staged groups are deleted below
            splitter.shutdown()  # first: it hands chunks to the writer and the summarizer
            for pool in (writer, summarizer):
                pool.shutdown(wait=True, cancel_futures=True)
            hasher.shutdown()
    except OSError as e:
        for key in keys:
            _quietly_delete(store, key)
        raise DlrError(
            f"cannot write the span of '{source}' into '{registry.url}': "
            f"{e.strerror or e}; nothing was committed"
        ) from None
    except BaseException:
        for key in keys:
            _quietly_delete(store, key)
        raise
    canonical = json.dumps(_core(schema), sort_keys=True).encode()
    digest = hashlib.sha256(canonical + b"".join(h.digest() for h in hashes)).hexdigest()
    return staged._replace(
        id=digest[:24],
        rows=rows,
        train_rows=train.rows,
        holdout_rows=holdout.rows,
        train_summary=train.summary.result() if summarize else None,
        holdout_summary=holdout.summary.result() if summarize else None,
    )


def _quietly_delete(store, key: str) -> None:
    try:
        store.delete(key)
    except OSError:
        pass


def _commit(registry: Registry, staged: list[_Staged], schema: dict, lease: Lease):
    """Publish the staged spans and rewrite spans.json (holding ``lease``)."""
    if not lease.held:
        raise DlrError("the registry lease was lost before the commit; nothing was committed")
    fixed = registry.fixed_schema()
    # a schema from before drift edges may have had them fixed meanwhile (by a retrain)
    legacy = fixed is not None and "drift" not in schema and "drift" in fixed
    if fixed is not None and fixed != schema and not (legacy and _core(fixed) == schema):
        raise DataError(
            f"the schema of '{registry.url}' was fixed by another ingest meanwhile "
            f"(features {', '.join(fixed['features'])}, label {fixed['label']}); nothing "
            "was committed"
        )
    registry.complete_history()
    registry.store.remove_stale_temps(("spans", "holdout", "staging"))
    committed = {e["id"]: e for e in registry.span_entries()}
    results, new = [], []
    at = now_iso()
    try:
        for s in staged:
            if s.id in committed:
                e = committed[s.id]
                results.append(
                    IngestResult(
                        s.id,
                        s.source,
                        e["rows"],
                        False,
                        e["train_rows"],
                        e["holdout_rows"],
                        e["source"],
                    )
                )
                continue
            registry.store.publish_tree(s.holdout_key, f"holdout/{s.id}")
            registry.store.publish_tree(s.train_key, f"spans/{s.id}")
            entry = {
                "id": s.id,
                "rows": s.rows,
                "train_rows": s.train_rows,
                "holdout_rows": s.holdout_rows,
                "committed_at": at,
                "source": s.source,
                "excluded": False,
                "reason": None,
                "holdout_fraction": s.holdout_fraction,
                "chunk_samples": s.chunk_samples,
            }
            committed[s.id] = entry
            new.append(entry)
            results.append(
                IngestResult(s.id, s.source, s.rows, True, s.train_rows, s.holdout_rows, None)
            )
        if new:
            pause_point("published")
            if fixed is None:
                registry.set_schema(schema)
                pause_point("schema-fixed")
            registry.update_span_entries(
                lambda current: _appended(current, new),
                lambda old, committed: _ingest_event(old, committed, lease),
            )
    except OSError as e:
        raise DlrError(
            f"cannot commit to '{registry.url}': {e.strerror or e}; nothing was committed"
        ) from None
    return results


def _core(schema: dict) -> dict:
    """The schema without its drift edges."""
    return {k: v for k, v in schema.items() if k != "drift"}


def _ingest_event(old: list[dict], new: list[dict], lease: Lease) -> dict:
    """The history event of a commit from entries ``old`` to ``new``: the spans it added
    (carried by spans.json, so it names exactly what the commit added)."""
    there = {e["id"] for e in old}
    added = [e for e in new if e["id"] not in there]
    return {
        "event": "ingest",
        "spans": [e["id"] for e in added],
        "sources": [e["source"] for e in added],
        "by": lease.owner,
        "run": lease.run_key,
    }


def _appended(entries: list[dict], new: list[dict]) -> list[dict] | None:
    """``entries`` and, after them, those of ``new`` that are not committed yet (None if
    every one is: nothing to commit)."""
    there = {e["id"] for e in entries}
    added = [e for e in new if e["id"] not in there]
    return entries + added if added else None
