"""The training set of a registry: its committed spans read as one dataset, without a copy.

:func:`training_source` chains the spans' train groups chunk by chunk: chunk i of the source is
chunk j of span k, read by the task that uses it, exactly as :func:`dlr.sources.from_dataset`
reads one group. Chunks are visited and reduced in span order, then chunk order, so training on
the spans is bit-identical to training on the same rows written as one group with the same chunk
boundaries. :func:`holdout_source` does the same over the spans' fresh-holdout groups.
"""

from datetime import UTC, datetime, timedelta

from dlr.dataset import open_dataset
from dlr.errors import DataError, DlrError
from dlr.registry import Registry, SpanInfo, parse_time
from dlr.sources import Source, ZarrChunks


class SpanChunks:
    """One column (X, y or w) over several span groups: global chunk i → chunk j of span k."""

    in_memory = False
    graph: dict = {}

    def __init__(self, parts: list[ZarrChunks], index: list[tuple[int, int]]):
        self.parts, self.index = parts, index

    def expr(self, i: int, *, capture: bool = False, streamed: bool = True):
        k, j = self.index[i]
        return self.parts[k].expr(j, capture=capture, streamed=streamed)


def training_source(registry: Registry, spans: list[SpanInfo]) -> Source:
    """The train rows of ``spans`` (in the given order) as one :class:`dlr.sources.Source`."""
    return _source(registry, spans, "train")


def holdout_source(registry: Registry, spans: list[SpanInfo]) -> Source:
    """The fresh-holdout rows of ``spans`` as one :class:`dlr.sources.Source`."""
    return _source(registry, spans, "holdout")


def _source(registry: Registry, spans: list[SpanInfo], part: str) -> Source:
    schema = registry.schema
    if schema is None or not spans:
        raise DataError(f"registry '{registry.url}' has no committed spans to read")
    weight = "w" if schema["sample_weight"] else None
    datasets = []
    for span in spans:
        rows = span.train_rows if part == "train" else span.holdout_rows
        if rows == 0:
            continue
        url = span.train_url if part == "train" else span.holdout_url
        ds = open_dataset(url, sample_weight=weight, storage_options=registry.storage_options)
        if ds.n_samples != rows:
            raise DataError(
                f"span {span.id} of '{registry.url}' is damaged: '{url}' has {ds.n_samples} "
                f"rows, spans.json says {rows}"
            )
        datasets.append((span, url, ds))
    if not datasets:
        ids = ", ".join(s.id for s in spans)
        raise DataError(f"the spans {ids} of '{registry.url}' have no {part} rows")
    dtypes = {str(ds.x.dtype) for _, _, ds in datasets}
    if len(dtypes) > 1:
        raise DataError(f"the spans of '{registry.url}' have different dtypes {sorted(dtypes)}")
    columns: dict[str, list] = {"x": [], "y": [], "s": []}
    index, bounds, offset = [], [], 0
    for k, (span, url, ds) in enumerate(datasets):
        local = ds.bounds
        where = f"span {span.id} ('{url}')"
        dx, dy, dw = ds.decoders
        columns["x"].append(ZarrChunks(ds.x, local, True, where, dx))
        columns["y"].append(ZarrChunks(ds.y, local, True, where, dy))
        if weight:
            columns["s"].append(ZarrChunks(ds.s, local, True, where, dw))
        for j, (s, e) in enumerate(local):
            index.append((k, j))
            bounds.append((offset + s, offset + e))
        offset += ds.n_samples
    n = datasets[0][2].n_features
    used = [span.id for span, _, _ in datasets]
    fingerprint = {
        "kind": "registry-spans",
        "registry": registry.url,
        "part": part,
        "spans": used,
        "shape": [offset, n],
        "chunk_samples": [ds.chunk_samples for _, _, ds in datasets],
        "dtype": dtypes.pop(),
    }
    return Source(
        origin=f"the {part} rows of {len(used)} span(s) of '{registry.url}'",
        x=SpanChunks(columns["x"], index),
        y=SpanChunks(columns["y"], index),
        n_samples=offset,
        n_features=n,
        samples_first=True,
        bounds=tuple(bounds),
        dtype=datasets[0][2].x.dtype,
        fingerprint=fingerprint,
        s=SpanChunks(columns["s"], index) if weight else None,
    )


def window(
    spans: list[SpanInfo], last: int | None = None, within: timedelta | None = None
) -> list[SpanInfo]:
    """The spans committed within ``within`` of now and/or the last ``last`` of them (both in
    commit order, so a backfilled older batch counts as recent)."""
    out = list(spans)
    if within is not None:
        cutoff = datetime.now(UTC) - within
        out = [s for s in out if parse_time(s.committed_at) >= cutoff]
    if last is not None:
        if last < 1:
            raise DlrError(f"a window of the last N spans needs N ≥ 1, got {last}")
        out = out[-last:]
    return out
