"""Applying a model out-of-core: logits, probabilities written to zarr, and evaluation metrics.

Every function maps one task per chunk (the chunk is read and scored in that task) through the
active dask scheduler; features are validated as they are read.
"""

import uuid

import dask.array as da
import numpy as np
import zarr
from dask.highlevelgraph import HighLevelGraph
from zarr.codecs import Crc32cCodec

from dlr.atomic import staged_url
from dlr.engine import current_get
from dlr.errors import DataError, DlrError
from dlr.kernel import ChunkContext, chunk_logits
from dlr.logistic import log_loss, sigmoid
from dlr.sources import Source


def _logits_task(x, wb, samples_first, context):
    return chunk_logits(x, wb[:-1], float(wb[-1]), samples_first=samples_first, check=context)


def _wb(w: np.ndarray, b: float) -> np.ndarray:
    return np.append(np.asarray(w, dtype=np.float64).ravel(), float(b))


def _context(source: Source, i: int) -> ChunkContext:
    return ChunkContext(source.origin, i, *source.bounds[i])


def logits(source: Source, w: np.ndarray, b: float) -> da.Array:
    """Lazy logits (m,) float64 of every sample, chunked like ``source``."""
    name = f"dlr-logits-{uuid.uuid4().hex[:10]}"
    wb = _wb(w, b)
    layer = {
        (name, i): (_logits_task, source.x.expr(i), wb, source.samples_first, _context(source, i))
        for i in range(source.n_chunks)
    }
    graph = HighLevelGraph.from_collections(name, {**source.x.graph, **layer}, dependencies=())
    sizes = tuple(e - s for s, e in source.bounds)
    return da.Array(graph, name, chunks=(sizes,), dtype=np.float64)


def _write_task(x, wb, samples_first, context, arr):
    if isinstance(x, Exception):
        return x
    try:
        arr[context.start : context.stop] = sigmoid(_logits_task(x, wb, samples_first, context))
    except Exception as e:  # returned, not raised: the caller raises it once all writes are over
        return e
    return None


def write_probabilities(
    source: Source,
    w,
    b,
    out: str,
    *,
    overwrite: bool = False,
    storage_options: dict | None = None,
    attributes: dict | None = None,
) -> None:
    """Write P(y = 1 | x) of every sample as a zarr array (m,) float64 at ``out``, chunked like
    the input. Written under a temporary name and renamed when complete (local paths).

    Every chunk task runs to its end, catching its own error, before the first error in chunk
    order is raised: so no write is still in flight when the temporary output is removed.
    """
    wb = _wb(w, b)
    token = uuid.uuid4().hex[:10]
    try:
        with staged_url(out, overwrite=overwrite, storage_options=storage_options) as target:
            arr = zarr.create_array(
                store=target,
                shape=(source.n_samples,),
                chunks=(source.bounds[0][1] - source.bounds[0][0],),
                dtype="float64",
                dimension_names=("sample",),
                compressors=[Crc32cCodec()],
                attributes=attributes or {},
                storage_options=storage_options,
                config={"write_empty_chunks": True},
            )
            keys = [(f"dlr-predict-{token}", i) for i in range(source.n_chunks)]
            dsk = dict(source.x.graph)
            for i, key in enumerate(keys):
                dsk[key] = (
                    _write_task,
                    source.x.expr(i, capture=True),
                    wb,
                    source.samples_first,
                    _context(source, i),
                    arr,
                )
            errors = [e for e in current_get()(dsk, keys) if e is not None]
            if errors:
                raise errors[0]
    except FileExistsError:
        raise DlrError(f"'{out}' exists; choose another output or pass --overwrite") from None


def _eval_task(x, y, wb, samples_first, context):
    z = _logits_task(x, wb, samples_first, context)
    y = np.asarray(y, dtype=np.float64)
    bad = (y != 0) & (y != 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"y must hold labels 0 and 1, but {context.where()} has {y[i]:g} "
            f"at sample {context.start + i}"
        )
    return float(log_loss(z, y).sum()), int(((z > 0) == (y == 1)).sum()), z, y.astype(np.uint8)


def evaluate(source: Source, w, b) -> dict:
    """Log-loss, accuracy and ROC AUC of the model (w, b) on labelled ``source``.

    One pass over the data; the loss and accuracy sums are reduced in chunk order. ROC AUC is
    exact: the logits and labels (9 bytes per sample) are brought to the client and ranked.
    """
    if source.y is None:
        raise DataError(f"{source.origin} has no labels; evaluation needs y")
    wb = _wb(w, b)
    token = uuid.uuid4().hex[:10]
    keys = [(f"dlr-eval-{token}", i) for i in range(source.n_chunks)]
    dsk = {**source.x.graph, **source.y.graph}
    for i, key in enumerate(keys):
        dsk[key] = (
            _eval_task,
            source.x.expr(i),
            source.y.expr(i),
            wb,
            source.samples_first,
            _context(source, i),
        )
    results = current_get()(dsk, keys)
    m = source.n_samples
    loss = sum(r[0] for r in results) / m
    accuracy = sum(r[1] for r in results) / m
    z = np.concatenate([r[2] for r in results])
    y = np.concatenate([r[3] for r in results])
    return {"n_samples": m, "log_loss": loss, "accuracy": accuracy, "roc_auc": roc_auc(z, y)}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact area under the ROC curve; tied scores count one half (as scikit-learn does).

    Returns NaN when only one class is present.
    """
    pos = labels == 1
    n_pos = int(pos.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    s, p = scores[order], pos[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    pos_in = np.add.reduceat(p.astype(np.int64), starts)
    neg_in = np.add.reduceat((~p).astype(np.int64), starts)
    neg_below = np.cumsum(neg_in) - neg_in
    return float((pos_in * (neg_below + 0.5 * neg_in)).sum() / (n_pos * n_neg))
