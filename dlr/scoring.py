"""Applying a model out-of-core: logits, probabilities written to zarr, and evaluation metrics.

A model here is ``theta`` (k, n + 1) = [W | b] on the original feature scale — k = 1 for a
binary model (σ of one logit), k = K ≥ 3 for a multinomial one (softmax of K logits) — with its
``classes`` (K,). Every function maps one task per chunk (the chunk is read and scored in that
task) through the active dask scheduler; features are validated as they are read.
"""

import uuid
import warnings

import dask.array as da
import numpy as np
import zarr
from dask.highlevelgraph import HighLevelGraph
from zarr.codecs import Crc32cCodec

from dlr import auc
from dlr.atomic import is_local, staged_url
from dlr.dataset import ALL_CHUNKS_STORED
from dlr.engine import check_fits, run_graph, sum_in_order
from dlr.errors import DataError, DlrError
from dlr.kernel import chunk_logits
from dlr.numerics import cross_entropy, sigmoid, softmax
from dlr.sources import Source

#: Bins of the reliability table (calibration summary) over predicted probability.
CALIBRATION_BINS = 10


def probabilities(z: np.ndarray) -> np.ndarray:
    """(m, K) class probabilities from logits: (m,) binary, or (m, K) multinomial."""
    if z.ndim == 1:
        p = sigmoid(z)
        return np.stack([1.0 - p, p], axis=1)
    return softmax(z)


def _logits_task(x, theta, samples_first, context):
    return chunk_logits(x, theta, samples_first=samples_first, check=context)


def logits(source: Source, theta: np.ndarray) -> da.Array:
    """Lazy logits of every sample, chunked like ``source``: (m,) binary, (m, K) multinomial."""
    name = f"dlr-logits-{uuid.uuid4().hex[:10]}"
    k = theta.shape[0]
    layer = {
        (name, i) if k == 1 else (name, i, 0): (
            _logits_task,
            source.x.expr(i),
            theta,
            source.samples_first,
            source.context(i),
        )
        for i in range(source.n_chunks)
    }
    graph = HighLevelGraph.from_collections(name, {**source.x.graph, **layer}, dependencies=())
    sizes = tuple(e - s for s, e in source.bounds)
    return da.Array(graph, name, chunks=(sizes,) if k == 1 else (sizes, (k,)), dtype=np.float64)


def _write_task(x, theta, samples_first, context, arr):
    if isinstance(x, Exception):
        return x
    try:
        p = probabilities(_logits_task(x, theta, samples_first, context))
        arr[context.start : context.stop] = p[:, 1] if p.shape[1] == 2 else p
    except Exception as e:  # returned, not raised: the caller raises it once all writes are over
        return e
    return None


#: The prediction output's variable, and its class coordinate (multinomial models).
PROBABILITY = "probability"
CLASS = "class"


def write_probabilities(
    source: Source,
    theta: np.ndarray,
    out: str,
    *,
    classes=None,
    overwrite: bool = False,
    storage_options: dict | None = None,
    attributes: dict | None = None,
) -> None:
    """Write predicted probabilities as a zarr group at ``out`` that ``xarray.open_zarr`` opens
    as a Dataset (zarr v3, dimension names, consolidated metadata).

    Its variable ``probability`` (float64) is chunked like the input: (m,) along ``sample``,
    P(second class), for a binary model; (m, K) along (``sample``, ``class``) for a multinomial
    one, whose coordinate ``class`` (K,) holds the ``classes`` (default 0..K−1). Every array
    records that all its chunks are stored (``dlr.all_chunks_stored``); ``attributes`` go into
    the group's ``dlr`` attribute, with the classes and what the probabilities are.

    Refused before anything runs if streaming a chunk would not fit in memory (see
    :func:`dlr.engine.check_fits`). Written under a temporary name and renamed when complete
    (local paths). Every chunk task runs to its end, catching its own error, before the first
    error in chunk order is raised: so no write is still in flight when the temporary output is
    removed.
    """
    check_fits(source, "predict")
    k = theta.shape[0]
    classes = np.asarray(np.arange(max(k, 2)) if classes is None else classes)
    c = source.bounds[0][1] - source.bounds[0][0]
    token = uuid.uuid4().hex[:10]
    what = f"P(y={classes[1]})" if k == 1 else "P(y=class)"
    stored = {"dlr": {ALL_CHUNKS_STORED: True}}
    try:
        with staged_url(out, overwrite=overwrite, storage_options=storage_options) as target:
            options = None if is_local(target) else storage_options
            group = zarr.open_group(target, mode="w", zarr_format=3, storage_options=options)
            group.attrs["dlr"] = {
                "format": "dlr-predictions",
                "what": what,
                "classes": classes.tolist(),
                **(attributes or {}),
            }
            arr = group.create_array(
                PROBABILITY,
                shape=(source.n_samples,) if k == 1 else (source.n_samples, k),
                chunks=(c,) if k == 1 else (c, k),
                dtype="float64",
                fill_value=np.nan,
                dimension_names=("sample",) if k == 1 else ("sample", CLASS),
                compressors=[Crc32cCodec()],
                attributes={"long_name": what, **stored},
                config={"write_empty_chunks": True},
            )
            if k > 1:
                text = classes.dtype.kind in "USO"  # string labels: zarr's variable-length strings
                labels = group.create_array(
                    CLASS,
                    shape=(k,),
                    dtype=str if text else classes.dtype,
                    dimension_names=(CLASS,),
                    compressors=[Crc32cCodec()],
                    attributes=stored,
                    config={"write_empty_chunks": True},
                )
                labels[:] = classes.astype(str) if text else classes
            with warnings.catch_warnings():
                # zarr warns that v3 has no consolidated metadata in its specification yet;
                # xarray reads it (and warns when it is absent)
                warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
                zarr.consolidate_metadata(group.store_path.store, group.store_path.path)
            keys = [(f"dlr-predict-{token}", i) for i in range(source.n_chunks)]
            dsk = dict(source.x.graph)
            for i, key in enumerate(keys):
                dsk[key] = (
                    _write_task,
                    source.x.expr(i, capture=True),
                    theta,
                    source.samples_first,
                    source.context(i),
                    arr,
                )
            errors = [e for e in run_graph(dsk, keys) if e is not None]
            if errors:
                raise errors[0]
    except FileExistsError:
        raise DlrError(f"'{out}' exists; choose another output or pass --overwrite") from None


def _auc_scores(z: np.ndarray, p: np.ndarray, targets: np.ndarray, k: int):
    """(scores, positive) per one-vs-rest problem: the logit for a binary model, each class's
    probability for a multinomial one."""
    if k == 2:
        return [(z, targets == 1)]
    return [(p[:, c], targets == c) for c in range(k)]


def _histograms(problems, partitions) -> list:
    return [
        None if part is None else auc.chunk_histogram(auc.keys(scores), positive, part)
        for (scores, positive), part in zip(problems, partitions, strict=True)
    ]


def _targets(y, classes, context) -> np.ndarray:
    y = np.asarray(y)
    targets = np.searchsorted(classes, y)
    known = (targets < len(classes)) & (classes[np.minimum(targets, len(classes) - 1)] == y)
    if not known.all():
        i = int(np.argmin(known))
        raise DataError(
            f"y has label {y[i]} at sample {context.start + i} in {context.where()}, which the "
            f"model does not know (classes {classes.tolist()})"
        )
    return targets


def _eval_task(x, y, theta, classes, samples_first, context, partitions):
    z = _logits_task(x, theta, samples_first, context)
    targets = _targets(y, classes, context)
    p = probabilities(z)
    predicted = p.argmax(axis=1)
    k = len(classes)
    confusion = np.zeros((k, k))
    np.add.at(confusion, (targets, predicted), 1)
    top = p[:, 1] if k == 2 else p.max(axis=1)
    hit = (targets == 1) if k == 2 else (predicted == targets)
    bins = np.minimum((top * CALIBRATION_BINS).astype(np.intp), CALIBRATION_BINS - 1)
    calibration = np.zeros((CALIBRATION_BINS, 3))
    np.add.at(calibration, bins, np.stack([np.ones_like(top), top, hit], axis=1))
    parts = {
        "loss": np.array(cross_entropy(z, targets).sum()),
        "confusion": confusion,
        "calibration": calibration,
    }
    return parts, _histograms(_auc_scores(z, p, targets, k), partitions)


def _auc_task(x, y, theta, classes, samples_first, context, partitions):
    """A refinement pass over a chunk: only the histograms of the problems still refined."""
    z = _logits_task(x, theta, samples_first, context)
    targets = _targets(y, classes, context)
    return _histograms(_auc_scores(z, probabilities(z), targets, len(classes)), partitions)


def _item(value, i):
    return value[i]


def _merge_histograms(*per_chunk: list) -> list:
    return [
        None if column[0] is None else auc.merge(*column) for column in zip(*per_chunk, strict=True)
    ]


#: Histograms merged per task in the tree that combines the chunks' (see :mod:`dlr.auc`).
MERGE_FAN_IN = 8


def _merge_tree(dsk: dict, keys: list, name: str):
    """Add a tree of :func:`_merge_histograms` tasks over ``keys``; returns the root key."""
    level = 0
    while len(keys) > 1:
        merged = []
        for j in range(0, len(keys), MERGE_FAN_IN):
            key = (f"{name}-{level}", j // MERGE_FAN_IN)
            dsk[key] = (_merge_histograms, *keys[j : j + MERGE_FAN_IN])
            merged.append(key)
        keys, level = merged, level + 1
    return keys[0]


def evaluate(source: Source, theta: np.ndarray, classes: np.ndarray) -> dict:
    """Log-loss, accuracy, ROC AUC, confusion matrix and reliability table on ``source``.

    One pass over the data, plus one per refinement of the AUC's histograms (usually one):
    per-chunk sums are reduced in chunk order, per-chunk histograms merged in a tree, so the
    client's memory does not depend on the number of samples. ``roc_auc`` (one vs rest,
    macro-averaged, for more than two classes) is within ``roc_auc_error_bound`` of the exact
    value (at most :data:`dlr.auc.TARGET` = 1e-6 unless :data:`dlr.auc.MAX_PASSES` were not
    enough; see :mod:`dlr.auc`), and ``roc_auc_passes`` says how many passes it took.
    """
    if source.y is None:
        raise DataError(f"{source.origin} has no labels; evaluation needs y")
    token = uuid.uuid4().hex[:10]
    k = len(classes)
    problems = 1 if k == 2 else k
    partitions = [auc.Partition.initial()] * problems
    results, passes = [None] * problems, 0
    sums = None
    while True:
        passes += 1
        dsk = dict(source.graph)
        part_key = (f"dlr-auc-partitions-{token}", passes)
        dsk[part_key] = partitions  # one object in the graph, not a copy in every task
        keys = [(f"dlr-eval-{token}-{passes}", i) for i in range(source.n_chunks)]
        task = _eval_task if sums is None else _auc_task
        for i, key in enumerate(keys):
            x, y, _ = source.exprs(i)
            dsk[key] = (task, x, y, theta, classes, source.samples_first, source.context(i))
            dsk[key] += (part_key,)
        if sums is None:
            sums_key = (f"dlr-eval-sums-{token}", passes)
            dsk[sums_key] = (sum_in_order, [(_item, key, 0) for key in keys])
            leaves = [(f"dlr-eval-hist-{token}-{passes}", i) for i in range(source.n_chunks)]
            for leaf, key in zip(leaves, keys, strict=True):
                dsk[leaf] = (_item, key, 1)
            root = _merge_tree(dsk, leaves, f"dlr-eval-merge-{token}-{passes}")
            sums, histograms = run_graph(dsk, [sums_key, root])
        else:
            (histograms,) = run_graph(dsk, [_merge_tree(dsk, keys, f"dlr-auc-{token}-{passes}")])
        for c, histogram in enumerate(histograms):
            if histogram is not None:
                results[c] = auc.auc_and_bound(histogram)
                refine = results[c][1] > auc.TARGET and passes < auc.MAX_PASSES
                partitions[c] = auc.refine(histogram) if refine else None
        if all(part is None for part in partitions):
            break
    m = source.n_samples
    confusion = sums["confusion"].astype(np.int64)
    calibration = sums["calibration"]
    with np.errstate(invalid="ignore", divide="ignore"):
        table = [
            {
                "bin": [i / CALIBRATION_BINS, (i + 1) / CALIBRATION_BINS],
                "count": int(row[0]),
                "mean_predicted": float(row[1] / row[0]) if row[0] else None,
                "observed": float(row[2] / row[0]) if row[0] else None,
            }
            for i, row in enumerate(calibration)
        ]
    aucs = np.array([r[0] for r in results])
    bounds = np.array([r[1] for r in results])
    defined = ~np.isnan(aucs)
    return {
        "n_samples": m,
        "log_loss": float(sums["loss"]) / m,
        "accuracy": float(np.trace(confusion)) / m,
        "roc_auc": float(aucs[defined].mean()) if defined.any() else float("nan"),
        "roc_auc_error_bound": float(bounds[defined].mean()) if defined.any() else 0.0,
        "roc_auc_passes": passes,
        "classes": classes.tolist(),
        "confusion_matrix": confusion.tolist(),
        "calibration": table,
    }


def report(metrics: dict) -> str:
    """The metrics of :func:`evaluate` as text: scores, confusion matrix, reliability table."""
    classes = [str(c) for c in metrics["classes"]]
    lines = [
        f"samples    {metrics['n_samples']}",
        f"log_loss   {metrics['log_loss']:.6g}",
        f"accuracy   {metrics['accuracy']:.6g}",
        f"roc_auc    {metrics['roc_auc']:.6g}",
        f"           (within {metrics['roc_auc_error_bound']:.1e} of the exact AUC; "
        f"{metrics['roc_auc_passes']} pass{'es' if metrics['roc_auc_passes'] > 1 else ''})",
        "",
        "confusion matrix (rows: true class, columns: predicted)",
    ]
    width = max(8, *(len(c) + 2 for c in classes))
    lines.append(" " * width + "".join(f"{c:>{width}}" for c in classes))
    for c, row in zip(classes, metrics["confusion_matrix"], strict=True):
        lines.append(f"{c:>{width}}" + "".join(f"{v:>{width}}" for v in row))
    what = f"P(y={classes[1]})" if len(classes) == 2 else "top-class probability"
    observed = f"fraction y={classes[1]}" if len(classes) == 2 else "fraction correct"
    lines += [
        "",
        f"calibration ({what} in bins)",
        f"{'bin':>12} {'count':>10} {'mean p':>8} {observed:>16}",
    ]
    for row in metrics["calibration"]:
        lo, hi = row["bin"]
        if row["count"]:
            lines.append(
                f"{lo:5.1f}–{hi:<4.1f}  {row['count']:>10} {row['mean_predicted']:8.3f} "
                f"{row['observed']:16.3f}"
            )
    return "\n".join(lines)
