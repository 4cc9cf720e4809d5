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
feature over the range of all its rows, which are known only once they are staged, so that
ingest counts its histograms by reading its staged spans back once.

The span id is the sha256 of the schema (without its drift edges) and the rows (computed
while writing), so the same content under any file name is the same span. Spans are written
under temporary names; then, holding the registry lease, ingest renames (or, on object
storage, copies) them to ``spans/<id>`` and ``holdout/<id>`` and rewrites ``spans.json``
atomically (on object storage also a compare-and-swap, :meth:`Registry.update_span_entries`)
— the commit, which carries the ingest's history event (its file follows). An interrupted
ingest leaves nothing visible, and no event; rerunning it completes it. A span already
committed changes nothing. All SOURCEs of one call are committed together or not at all.
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

from dlr.dataset import SAMPLES_FIRST, codecs
from dlr.errors import DataError, DlrError
from dlr.lease import COMMAND_TTL, Lease, default_owner
from dlr.pause import pause_point
from dlr.registry import Registry, now_iso
from dlr.spansummary import DEFAULT_BINS, summary_bytes
from dlr.summary import Accumulator, Edges, Summary, histogram, merge
from dlr.tables import read_batches

#: Default rows per chunk of a span: about this many bytes of features.
CHUNK_BYTES = 8 << 20

#: Chunk writes a span's writer may have outstanding while the next batch is read and checked.
WRITES_AHEAD = 2

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
    schema = registry.schema
    first_ingest = schema is None
    if not first_ingest:
        _check_drift_bins(schema, drift_bins, registry.url)
    staged: list[_Staged] = []
    try:
        for source in sources:
            batches = read_batches(str(source), chunk_samples or 65536, storage_options)
            first = next(batches, None)
            if first is None:
                raise DataError(f"'{source}' holds no rows")
            schema = _schema(schema, first[2].schema, first[0], label, features, sample_weight)
            staged.append(
                _stage(
                    registry,
                    str(source),
                    _chain(first, batches),
                    schema,
                    holdout_fraction,
                    chunk_samples,
                    first_ingest,
                )
            )
        if first_ingest:
            schema, staged = _fix_edges(registry, schema, staged, drift_bins or DEFAULT_BINS)
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


def _fix_edges(registry: Registry, schema: dict, staged: list, bins: int):
    """The first ingest's schema with its drift edges — ``bins`` bins over the range of all
    its staged rows — and its staged spans with their histograms on them, counted by reading
    the staged groups back chunk by chunk (once in the registry's life)."""
    edges = Edges.spanning(
        merge([x for s in staged for x in (s.train_summary, s.holdout_summary)]), bins
    )

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
    return {**schema, "drift": edges.to_json()}, staged


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


def _check(batch: pa.RecordBatch, schema: dict, file: str, offset: int):
    """(X (m, n) in the schema's dtype, y (m,) int64, w (m,) float64 or None) of a batch,
    or a DataError naming file, column and row."""
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
    X = np.column_stack(
        [
            batch.column(c).to_numpy(zero_copy_only=False).astype(x_dtype, copy=False)
            for c in features
        ]
    )
    finite = np.isfinite(X)
    if not finite.all():
        row, j = (int(i) for i in np.argwhere(~finite)[0])
        raise DataError(
            f"'{file}', column '{features[j]}', row {offset + row}: {X[row, j]}; features must "
            "be finite (no NaN or inf)"
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
    y = raw.astype(np.int64)
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
    return X, y, w


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
    if fraction == 0:
        return np.zeros(len(y), dtype=bool)
    h = np.full(len(y), _SEED, dtype=np.uint64)
    t = np.empty_like(h)
    bits = np.empty(len(y), dtype=np.float64)
    columns = [X[:, j] for j in range(X.shape[1])] + [y] + ([w] if w is not None else [])
    for column in columns:
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

    Chunks are compressed and written by ``writer``, a one-thread executor the caller owns (and
    shares between the groups of one source, so every array is only ever touched by that
    thread, in order), while the caller reads, checks and hashes the next batch. At most
    :data:`WRITES_AHEAD` writes are outstanding, which bounds the rows held in memory; an error
    of a write (a full disk) comes out of the next :meth:`append` or :meth:`close`. The rows'
    ``summary`` is counted the same way by ``summarizer``, another one-thread executor (so
    each :class:`dlr.summary.Accumulator` sees its rows in order), at most
    :data:`WRITES_AHEAD` batches behind.
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
    ):
        n = len(schema["features"])
        group = _open_group(registry, key, "w")
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
        self.rows = 0
        self.pending: list[tuple] = []
        self.pending_rows = 0
        self.writer = writer
        self.writes: list = []
        self.summary, self.summarizer = summary, summarizer
        self.counting: list = []

    def append(self, X, y, w) -> None:
        """Add rows; every whole chunk they complete is written at once."""
        if self.summary is not None and len(y):
            self.counting.append(self.summarizer.submit(self.summary.add, X, y))
            while len(self.counting) > WRITES_AHEAD:
                self.counting.pop(0).result()
        if len(y):
            self.pending.append((X, y, w))
            self.pending_rows += len(y)
        if self.pending_rows >= self.c:
            self._flush(self.pending_rows // self.c * self.c)

    def close(self) -> None:
        """Write the last, partial chunk and wait until every write is done."""
        if self.pending_rows:
            self._flush(self.pending_rows)
        while self.writes:
            self.writes.pop(0).result()
        while self.counting:
            self.counting.pop(0).result()

    def _flush(self, rows: int) -> None:
        """Hand the first ``rows`` pending rows (whole chunks, or the last one) to the writer
        and keep the rest pending."""
        X, y = _joined([p[0] for p in self.pending]), _joined([p[1] for p in self.pending])
        w = _joined([p[2] for p in self.pending]) if self.w is not None else None
        start, stop = self.rows, self.rows + rows
        rows_w = w[:rows] if w is not None else None
        self.writes.append(self.writer.submit(self._write, start, stop, X[:rows], y[:rows], rows_w))
        self.rows = stop
        rest = (X[rows:], y[rows:], w[rows:] if w is not None else None)
        self.pending = [rest] if len(rest[1]) else []
        self.pending_rows = len(rest[1])
        while len(self.writes) > WRITES_AHEAD:
            self.writes.pop(0).result()

    def _write(self, start: int, stop: int, X, y, w) -> None:
        """Grow the arrays to ``stop`` rows and write rows [start, stop) (the writer's thread)."""
        self.x.resize((stop, X.shape[1]))
        self.y.resize((stop,))
        self.x[start:stop] = X
        self.y[start:stop] = y
        if self.w is not None:
            self.w.resize((stop,))
            self.w[start:stop] = w


def _hash_rows(hashes, X, y, w) -> None:
    """Add a batch's X, y and w (if any), little-endian, to their sha256 (hashlib releases
    the GIL: this runs beside the reading and writing)."""
    for h, a in zip(hashes, (X, y, w), strict=True):
        if a is not None:
            h.update(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).data)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """The rows of ``parts`` as one array (the part itself when there is one: no copy)."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _stage(
    registry: Registry,
    source: str,
    batches,
    schema: dict,
    holdout_fraction: float,
    chunk_samples: int | None,
    first_ingest: bool,
) -> _Staged:
    """Write one SOURCE as staged train and holdout groups; hash and summarize its content
    meanwhile (histograms only on the schema's drift edges: none yet at the first ingest, and
    none kept in a registry from before them)."""
    n = len(schema["features"])
    c = chunk_samples or max(1, CHUNK_BYTES // (n * np.dtype(schema["x_dtype"]).itemsize))
    store = registry.store
    prefix = ("spans", "holdout") if store.local else ("staging", "staging")
    keys = store.temp_key(prefix[0]), store.temp_key(prefix[1])
    staged = _Staged("", source, 0, 0, 0, *keys, holdout_fraction, c)
    hashes = [hashlib.sha256() for _ in range(3)]
    edges = Edges.from_json(schema.get("drift"))
    summarize = edges is not None or first_ingest
    writer = ThreadPoolExecutor(1, thread_name_prefix="dlr-ingest-write")
    summarizer = ThreadPoolExecutor(1, thread_name_prefix="dlr-ingest-summary")
    hasher = ThreadPoolExecutor(1, thread_name_prefix="dlr-ingest-hash")  # batches in order
    hashing: list = []
    try:
        try:
            train, holdout = (
                _GroupWriter(
                    registry,
                    key,
                    schema,
                    c,
                    writer,
                    Accumulator(n, edges) if summarize else None,
                    summarizer,
                )
                for key in keys
            )
            rows = 0
            for file, offset, batch in batches:
                X, y, w = _check(batch, schema, file, offset)
                hashing.append(hasher.submit(_hash_rows, hashes, X, y, w))
                while len(hashing) > WRITES_AHEAD:
                    hashing.pop(0).result()
                held = holdout_mask(X, y, w, holdout_fraction)
                keep = ~held
                train.append(X[keep], y[keep], w[keep] if w is not None else None)
                holdout.append(X[held], y[held], w[held] if w is not None else None)
                rows += len(y)
            train.close()
            holdout.close()
            while hashing:
                hashing.pop(0).result()
        finally:  # no write may still run when the staged groups are deleted below
            writer.shutdown(wait=True, cancel_futures=True)
            summarizer.shutdown(wait=True, cancel_futures=True)
            hasher.shutdown(wait=True, cancel_futures=True)
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
    fixed = registry.schema
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
