"""Span summaries in a registry: kept at ingest, derived once for spans from before, read by drift.

Each span group keeps the :class:`dlr.summary.Summary` of its rows next to its arrays:

    REG/spans/<id>/summary.json     of the span's train rows
    REG/holdout/<id>/summary.json   of its fresh-holdout rows

with histograms on the registry's drift edges (``schema["drift"]``, :class:`dlr.summary.Edges`,
fixed at its first ingest) and the edges they were counted on. Ingest writes them into the
staged groups, so they are published with the span and complete before the commit that makes
it visible (:mod:`dlr.spans`); :func:`span_drift` then needs no pass over the data.

A registry from before kept none, and its schema has no edges. On first need
(:func:`train_summaries`, the caller holding the lease) the edges are fixed from the range of
its oldest span (train and holdout rows, :data:`DEFAULT_BINS` bins) and recorded in the schema,
and each missing summary is computed with one pass over the span's train rows — per-chunk
summaries combined in chunk order — and stored as a write-once file (an exclusive create) for
every later run.
"""

import json
import uuid

from dlr.drift import drift
from dlr.errors import DlrError
from dlr.registry import Registry, RegistryConflict, SpanInfo
from dlr.summary import Edges, Summary, empty, from_json, merge, of_rows, to_json

#: PSI bins of a registry whose first ingest gave no ``--drift-bins``.
DEFAULT_BINS = 10

PARTS = {"train": "spans", "holdout": "holdout"}


def summary_key(span_id: str, part: str) -> str:
    """The registry key of a span's summary (``part``: "train" or "holdout")."""
    return f"{PARTS[part]}/{span_id}/summary.json"


def summary_bytes(summary: Summary, edges: Edges) -> bytes:
    """The content of a summary.json: the summary and the edges of its histograms."""
    doc = {**to_json(summary), "edges": edges.to_json()}
    return (json.dumps(doc, allow_nan=False) + "\n").encode()


def load(registry: Registry, span_id: str, part: str, edges: Edges | None) -> Summary | None:
    """The stored summary of a span's rows; None if there is none, or if its histograms were
    counted on other edges than ``edges`` (then it is computed again)."""
    key = summary_key(span_id, part)
    raw = registry.store.read(key)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        summary = from_json(doc)
    except (ValueError, KeyError, TypeError) as e:
        raise DlrError(f"'{registry.store.url_of(key)}' is not a span summary: {e}") from None
    if edges is not None and doc.get("edges") != edges.to_json():
        return None
    return summary


def edges_of(registry: Registry) -> Edges | None:
    """The registry's drift edges, or None (a registry from before they were kept)."""
    return Edges.from_json((registry.schema or {}).get("drift"))


# the pass over span data of a registry from before summaries ---------------------------------
def _chunk_summary(x, y, samples_first, bins, lo, hi):
    edges = None if bins is None else Edges(bins, lo, hi)
    return of_rows(x, y, edges, samples_first=samples_first)


def _run(sources: list, edges: Edges | None) -> list[list]:
    """The summary of every chunk of every source, in one graph: per source, in chunk
    order."""
    from dlr.engine import run_graph  # dask: only for registries from before summaries

    args = (None, None, None) if edges is None else (edges.bins, edges.lo, edges.hi)
    token = uuid.uuid4().hex[:10]
    dsk, keys = {}, []
    for k, source in enumerate(sources):
        dsk.update(source.graph)
        mine = []
        for i in range(source.n_chunks):
            x, y, _ = source.exprs(i)
            key = (f"dlr-span-summary-{token}-{k}", i)
            dsk[key] = (_chunk_summary, x, y, source.samples_first, *args)
            mine.append(key)
        keys.append(mine)
    flat = run_graph(dsk, [key for mine in keys for key in mine]) if dsk else []
    out, at = [], 0
    for mine in keys:
        out.append(flat[at : at + len(mine)])
        at += len(mine)
    return out


def summarize(sources: list, edges: Edges | None) -> list[Summary]:
    """The summary of each source's rows (one pass over all of them, one graph); histograms
    only with ``edges``."""
    return [merge(parts) for parts in _run(sources, edges)]


# what drift reads ------------------------------------------------------------------------------
def train_summaries(registry: Registry, spans: list[SpanInfo], echo=print) -> list[Summary]:
    """The summary of each span's train rows, from the stored files; for spans from before
    summaries were kept, computed with one pass over them and stored (and, in a registry whose
    schema has no drift edges yet, the edges fixed first: the caller holds the lease)."""
    from dlr.spanset import training_source

    edges = edges_of(registry)
    fixed = None
    if edges is None:
        edges, fixed = _edges_of_oldest_span(registry), registry.spans(include_excluded=True)[0].id
    found = [load(registry, s.id, "train", edges) for s in spans]
    missing = [s for s, f in zip(spans, found, strict=True) if f is None]
    if missing:
        note = f"; drift bins fixed from the range of span {fixed}" if fixed else ""
        echo(
            f"drift: {len(missing)} span(s) have no summary (ingested before dlr kept them): "
            f"one pass over their train rows, stored for later runs{note}"
        )
        n = len(registry.schema["features"])
        with_rows = [s for s in missing if s.train_rows]
        computed = dict(
            zip(
                [s.id for s in with_rows],
                summarize([training_source(registry, [s]) for s in with_rows], edges),
                strict=True,
            )
        )
        for s in missing:
            summary = computed.get(s.id, empty(n, edges))
            _store_derived(registry, summary_key(s.id, "train"), summary, edges)
            computed[s.id] = summary
        found = [f if f is not None else computed[s.id] for s, f in zip(spans, found, strict=True)]
    return found


def _edges_of_oldest_span(registry: Registry) -> Edges:
    """Edges of :data:`DEFAULT_BINS` bins over the range of the registry's oldest span (its
    train and holdout rows), recorded in the schema; those another process recorded first,
    if it did."""
    from dlr.spanset import holdout_source, training_source

    oldest = registry.spans(include_excluded=True)[0]
    sources = [training_source(registry, [oldest])] if oldest.train_rows else []
    sources += [holdout_source(registry, [oldest])] if oldest.holdout_rows else []
    edges = Edges.spanning(merge(summarize(sources, None)), DEFAULT_BINS)
    try:
        registry.set_drift_edges(edges.to_json())
    except RegistryConflict:
        return edges_of(registry)
    return edges


def _store_derived(registry: Registry, key: str, summary: Summary, edges: Edges) -> None:
    """Store a summary computed after its span was committed: written once, whole (a file
    there already — written meanwhile, or counted on other edges — is replaced whole)."""
    from dlr.regstore import Conflict

    data = summary_bytes(summary, edges)
    try:
        registry.store.create(key, data)
    except Conflict:
        registry.store.write(key, data)


def span_drift(
    registry: Registry, reference: list[SpanInfo], new: list[SpanInfo], echo=print
) -> dict | None:
    """:func:`dlr.drift.drift` of the train rows of ``new`` against those of ``reference``
    (each merged in span order), from the spans' summaries; None if either has no rows."""
    summaries = train_summaries(registry, reference + new, echo)
    ref, cur = merge(summaries[: len(reference)]), merge(summaries[len(reference) :])
    if ref.count == 0 or cur.count == 0:
        return None
    return drift(ref, cur, names=registry.schema["features"])
