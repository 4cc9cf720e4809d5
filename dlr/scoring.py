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

from dlr import auc, curves
from dlr.atomic import is_local, staged_url
from dlr.dataset import ALL_CHUNKS_STORED
from dlr.engine import check_fits, current_get, rooms_of, run_graph, sum_in_order
from dlr.errors import DataError, DlrError
from dlr.kernel import chunk_logits
from dlr.numerics import cross_entropy, sigmoid, softmax, softplus_sum_and_sigmoid
from dlr.sources import Source

#: Bins of the reliability table (calibration summary) over predicted probability.
CALIBRATION_BINS = 10
#: The method of :func:`evaluate_many`'s metrics: a retrain reuses metrics recorded by
#: an earlier run only if they were computed by the same method. Raise it with any change
#: that could change a metric's bits.
METHOD = 3


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
    """Class indices (m_c,) of the labels ``y``, each checked to be one of ``classes``."""
    y = np.asarray(y)
    k = len(classes)
    if y.dtype.kind in "iu" and classes.dtype.kind in "iu" and y.size:
        if np.array_equal(classes, np.arange(k)) and 0 <= y.min() and y.max() < k:
            return y.astype(np.intp, copy=False)  # labels 0..K−1 are their own indices
    targets = np.searchsorted(classes, y)
    known = (targets < len(classes)) & (classes[np.minimum(targets, len(classes) - 1)] == y)
    if not known.all():
        i = int(np.argmin(known))
        raise DataError(
            f"y has label {y[i]} at sample {context.start + i} in {context.where()}, which the "
            f"model does not know (classes {classes.tolist()})"
        )
    return targets


def _chunk_logits(x, thetas, wanted, samples_first, context) -> list:
    """Logits of the chunk under each ``thetas[j]`` that is ``wanted[j]`` (None for the others);
    the features are validated once, by the first."""
    out, check = [], context
    for theta, want in zip(thetas, wanted, strict=True):
        if not want:
            out.append(None)
            continue
        out.append(chunk_logits(x, theta, samples_first=samples_first, check=check))
        check = None
    return out


def _sums(z, targets, k, curve_bins) -> tuple[dict, np.ndarray]:
    """One model's sums over a chunk (loss, confusion, calibration, optionally the score
    counts of :func:`dlr.curves.chunk_counts`) and its probabilities (m_c, K), None for a
    binary model."""
    if k == 2:  # σ and the loss's Σ softplus from one exp (σ as probabilities gives it)
        softplus, a = softplus_sum_and_sigmoid(z)
        loss = np.array(softplus - np.dot(targets.astype(np.float64), z))
        p = None  # the binary model's AUC ranks the logits
        # argmax of (1 − σ, σ), ties to class 0: σ > 1 − σ, which is σ > 0.5 exactly (for
        # σ ≥ 0.5, 1 − σ is exact; below, 1 − σ rounds to at least 0.5)
        hit = targets == 1
        predicted = (a > 0.5).view(np.int8)
        top = a
    else:
        loss = np.array(cross_entropy(z, targets).sum())
        p = probabilities(z)
        predicted = p.argmax(axis=1)
        top, hit = p.max(axis=1), predicted == targets
    confusion = np.bincount(targets * k + predicted, minlength=k * k).reshape(k, k)
    bins = np.minimum((top * CALIBRATION_BINS).astype(np.intp), CALIBRATION_BINS - 1)
    calibration = np.stack(
        [
            np.bincount(bins, minlength=CALIBRATION_BINS),
            np.bincount(bins, weights=top, minlength=CALIBRATION_BINS),
            np.bincount(bins, weights=hit, minlength=CALIBRATION_BINS),
        ],
        axis=1,
    )
    parts = {
        "loss": loss,
        "confusion": confusion,
        "calibration": calibration,
    }
    if curve_bins and k == 2:
        parts["score_counts"] = curves.chunk_counts(a, hit, curve_bins)
    return parts, p


def _eval_task(x, y, thetas, classes, samples_first, context, partitions, curve_bins):
    """The first pass over a chunk, read once for every model: (each model's sums, the AUC
    histograms of every (model, problem), model-major)."""
    zs = _chunk_logits(x, thetas, [True] * len(thetas), samples_first, context)
    targets = _targets(y, classes, context)
    k = len(classes)
    per_model = len(partitions) // len(thetas)
    sums, histograms = [], []
    for j, z in enumerate(zs):
        parts, p = _sums(z, targets, k, curve_bins)
        sums.append(parts)
        mine = partitions[j * per_model : (j + 1) * per_model]
        histograms += _histograms(_auc_scores(z, p, targets, k), mine)
    return sums, histograms


def _auc_task(x, y, thetas, classes, samples_first, context, partitions):
    """A refinement pass over a chunk: only the histograms of the problems still refined, and
    only the logits of the models that have such a problem."""
    k = len(classes)
    per_model = len(partitions) // len(thetas)
    mine = [partitions[j * per_model : (j + 1) * per_model] for j in range(len(thetas))]
    wanted = [any(part is not None for part in parts) for parts in mine]
    zs = _chunk_logits(x, thetas, wanted, samples_first, context)
    targets = _targets(y, classes, context)
    histograms = []
    for z, parts in zip(zs, mine, strict=True):
        if z is None:
            histograms += parts
        else:
            p = probabilities(z) if k > 2 else None
            histograms += _histograms(_auc_scores(z, p, targets, k), parts)
    return histograms


def _item(value, i):
    return value[i]


def _model_sums(value, j):
    return value[0][j]


def _merged_negatives(*per_chunk: list) -> list:
    """Per (model, problem): the negatives of every chunk's :class:`dlr.auc.SortedKeys`,
    merged (None where the chunks have none)."""
    return [
        None if column[0] is None else auc.merged_negatives(*column)
        for column in zip(*per_chunk, strict=True)
    ]


def _exact_counts(negatives: list, *per_chunk: list) -> list:
    """Per (model, problem): :func:`dlr.auc.exact_count` of these chunks' positives."""
    return [
        None if neg is None else auc.exact_count(neg, *column)
        for neg, column in zip(negatives, zip(*per_chunk, strict=True), strict=True)
    ]


def _exact_aucs(negatives: list, *per_group: list) -> list:
    """Per (model, problem): (AUC, bound 0) from the groups' counts (None where none)."""
    return [
        None if neg is None else auc.exact_auc_of(counts, neg.size)
        for neg, counts in zip(negatives, zip(*per_group, strict=True), strict=True)
    ]


def _merge_histograms(*per_chunk: list) -> list:
    return [
        None if column[0] is None else auc.merge(*column) for column in zip(*per_chunk, strict=True)
    ]


#: Histograms merged per task in the tree that combines the chunks' (see :mod:`dlr.auc`).
MERGE_FAN_IN = 8
#: Chunks whose positives one task counts against the merged negatives, for an exact AUC.
COUNT_FAN_IN = 4


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

    One pass over the data, plus one per refinement of the AUC's histograms (none up to about
    a million samples, usually one past that):
    per-chunk sums are reduced in chunk order, per-chunk histograms merged in a tree, so the
    client's memory does not depend on the number of samples (up to :data:`dlr.auc.BINS`
    samples, the chunks' sorted keys: their negatives merged, their positives counted against
    them by groups of :data:`COUNT_FAN_IN` chunks side by side). ``roc_auc`` (one vs rest,
    macro-averaged, for more than two classes) is within ``roc_auc_error_bound`` of the exact
    value (at most :data:`dlr.auc.TARGET` = 1e-6 unless :data:`dlr.auc.MAX_PASSES` were not
    enough; see :mod:`dlr.auc`), and ``roc_auc_passes`` says how many passes it took.
    """
    return evaluate_many(source, [theta], classes)[0]


def evaluate_many(
    source: Source, thetas: list[np.ndarray], classes: np.ndarray, *, curve_bins: int = 0
) -> list[dict]:
    """:func:`evaluate` of several models (each theta (k, n + 1)) sharing the passes: each chunk
    is read once per pass and every model's sums and histograms come from that read.

    Each model's dict is the one :func:`evaluate` returns for it alone, bit for bit. The first
    pass serves every model; a refinement pass computes only the models whose AUC bound still
    needs one (so it costs a pass over the data if any does). With ``curve_bins`` and two
    classes, each dict also holds ``score_counts`` (2, curve_bins) int64: the model's
    negatives and positives per equal-width bin of P(y = classes[1]) (see :mod:`dlr.curves`),
    counted in the first pass. A chunk that cannot be streamed in the memory there is is
    refused before the first pass (:func:`dlr.engine.check_fits`).
    """
    return evaluate_sources([(source, thetas)], classes, curve_bins=curve_bins)[0]


def evaluate_sources(jobs, classes: np.ndarray, *, curve_bins: int = 0) -> list[list[dict]]:
    """:func:`evaluate_many` of each (source, thetas) of ``jobs``, their passes in the same
    graphs: the chunks of every source are computed side by side (a small source's beside a
    large one's instead of after it), each source's results bit for bit those of
    :func:`evaluate_many` alone. A pass serves the sources that still need one."""
    # the memory there is, read once for every source (each is checked as check_fits does)
    streamed = any(thetas and not source.in_memory for source, thetas in jobs)
    rooms = rooms_of(current_get()) if streamed else None
    evaluations = [
        _Evaluation(source, list(thetas), classes, curve_bins, rooms) for source, thetas in jobs
    ]
    while pending := [e for e in evaluations if not e.finished]:
        dsk, wanted = {}, []
        for e in pending:
            wanted.append(e.add_pass(dsk))
        values = iter(run_graph(dsk, [key for keys in wanted for key in keys]))
        for e, keys in zip(pending, wanted, strict=True):
            e.take([next(values) for _ in keys])
    return [e.metrics() for e in evaluations]


class _Evaluation:
    """The passes of one source's evaluation of its models: their AUC partitions (None once
    done), results and passes, and the first pass's sums."""

    def __init__(self, source: Source, thetas: list, classes: np.ndarray, curve_bins: int, rooms):
        if source.y is None:
            raise DataError(f"{source.origin} has no labels; evaluation needs y")
        if thetas:
            check_fits(source, "evaluate", rooms=rooms)
        self.source, self.thetas, self.classes = source, thetas, classes
        self.curve_bins = curve_bins
        self.token = uuid.uuid4().hex[:10]
        k = len(classes)
        self.problems = 1 if k == 2 else k
        self.partitions = [auc.Partition.initial()] * (self.problems * len(thetas))
        self.results = [None] * len(self.partitions)
        self.passes, self.done = [0] * len(thetas), 0
        self.sums = None

    @property
    def finished(self) -> bool:
        return all(part is None for part in self.partitions) and (
            self.sums is not None or not self.thetas
        )

    def add_pass(self, dsk: dict) -> list:
        """Add the next pass's tasks to ``dsk``; returns the keys whose values :meth:`take`
        wants."""
        source, token, problems = self.source, self.token, self.problems
        self.done += 1
        done = self.done
        for j in range(len(self.thetas)):
            if any(part is not None for part in self.partitions[j * problems : (j + 1) * problems]):
                self.passes[j] = done
        dsk.update(source.graph)
        part_key = (f"dlr-auc-partitions-{token}", done)
        dsk[part_key] = self.partitions  # one object in the graph, not a copy in every task
        keys = [(f"dlr-eval-{token}-{done}", i) for i in range(source.n_chunks)]
        first = self.sums is None
        for i, key in enumerate(keys):
            x, y, _ = source.exprs(i)
            dsk[key] = (_eval_task if first else _auc_task, x, y, self.thetas, self.classes)
            dsk[key] += (source.samples_first, source.context(i), part_key)
            if first:
                dsk[key] += (self.curve_bins,)
        if not first:
            return [_merge_tree(dsk, keys, f"dlr-auc-{token}-{done}")]
        sums_keys = [(f"dlr-eval-sums-{token}", j) for j in range(len(self.thetas))]
        for j, sums_key in enumerate(sums_keys):
            dsk[sums_key] = (sum_in_order, [(_model_sums, key, j) for key in keys])
        leaves = [(f"dlr-eval-hist-{token}-{done}", i) for i in range(source.n_chunks)]
        for leaf, key in zip(leaves, keys, strict=True):
            dsk[leaf] = (_item, key, 1)
        if not self.exact:
            return [*sums_keys, _merge_tree(dsk, leaves, f"dlr-eval-merge-{token}-{done}")]
        # every chunk's keys are kept (SortedKeys): the negatives merged, then the positives
        # counted against them by groups of chunks side by side, instead of merging it all
        negatives = (f"dlr-eval-neg-{token}", 0)
        dsk[negatives] = (_merged_negatives, *leaves)
        groups = []
        for g in range(0, len(leaves), COUNT_FAN_IN):
            groups.append((f"dlr-eval-count-{token}", g // COUNT_FAN_IN))
            dsk[groups[-1]] = (_exact_counts, negatives, *leaves[g : g + COUNT_FAN_IN])
        dsk[(f"dlr-eval-auc-{token}", 0)] = (_exact_aucs, negatives, *groups)
        return [*sums_keys, (f"dlr-eval-auc-{token}", 0)]

    @property
    def exact(self) -> bool:
        """Whether the first pass keeps every chunk's keys (:class:`dlr.auc.SortedKeys`, up to
        :data:`dlr.auc.BINS` samples): then its AUCs are exact and no pass follows."""
        return self.source.n_samples <= auc.BINS

    def take(self, values: list) -> None:
        """The values of the keys :meth:`add_pass` returned: refine what needs it."""
        if self.sums is None:
            *self.sums, histograms = values
            if self.exact:
                self.results = histograms  # (AUC, bound 0) per (model, problem)
                self.partitions = [None] * len(self.partitions)
                return
        else:
            (histograms,) = values
        for c, histogram in enumerate(histograms):
            if histogram is not None:
                self.results[c] = auc.auc_and_bound(histogram)
                refine = self.results[c][1] > auc.TARGET and self.done < auc.MAX_PASSES
                self.partitions[c] = auc.refine(histogram) if refine else None

    def metrics(self) -> list[dict]:
        problems = self.problems
        return [
            _metrics(
                self.source.n_samples,
                self.sums[j],
                self.results[j * problems : (j + 1) * problems],
                self.passes[j],
                self.classes,
            )
            for j in range(len(self.thetas))
        ]


def _metrics(m: int, sums: dict, results: list, passes: int, classes: np.ndarray) -> dict:
    """One model's metrics (the keys of :func:`evaluate`) from its sums and AUC results."""
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
    metrics = {
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
    if "score_counts" in sums:
        metrics["score_counts"] = sums["score_counts"].astype(np.int64)
    return metrics


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
