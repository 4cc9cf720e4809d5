"""One scheduled retraining run: lock, warm-started fit, evaluation, gate, version, alias, report.

A run is named by its *run key* (by default the scheduled time truncated to the schedule's
period, see :func:`run_key_for`) and records its progress in the registry's
``runs/<run key>/run.json``, so running the same key again is safe at every point:

    status "training"   the spans and the champion the run trains against are fixed; a rerun
                        trains on exactly those, resuming the fit from its checkpoint
                        (bit-identical to an uninterrupted fit)
    status "evaluated"  metrics, drift and the gate's decision are known; a rerun registers
                        the version (unless a version of this run key already exists — then it
                        only finishes moving the alias)
    status "finished"   a rerun does nothing and reports the outcome again (same exit code)

The whole run holds the registry lease (:mod:`dlr.lease`); the alias move is a compare-and-swap
against the champion the gate evaluated, so a run that lost its lease cannot publish.

Exit codes: :data:`PROMOTED` 0 (or challenger set under ``promote="manual"``), :data:`REJECTED`
3, :data:`NOTHING_NEW` 4, :data:`LOCKED` 5; errors raise :class:`dlr.errors.DlrError` (exit 1).
"""

import hashlib
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import fsspec
import numpy as np

from dlr import __version__, scoring, serial
from dlr.curves import BINS as CURVE_BINS
from dlr.dataset import Dataset, open_dataset
from dlr.errors import DlrError
from dlr.estimator import LogisticRegression, load
from dlr.gate import decide, parse_gate
from dlr.lease import Lease, LeaseHeld, default_owner
from dlr.pause import pause_point
from dlr.registry import Registry, RegistryConflict, now_iso
from dlr.report import jsonable, report_files, summary
from dlr.sources import from_dataset
from dlr.spanset import holdout_source, training_source, window
from dlr.spansummary import span_drift

PROMOTED, ERROR, REJECTED, NOTHING_NEW, LOCKED = 0, 1, 3, 4, 5
EXIT_CODES = {"promoted": PROMOTED, "challenger": PROMOTED, "rejected": REJECTED}
RUN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PERIOD = re.compile(r"^(\d+)([smhdw])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class RetrainConfig:
    """Everything a run needs besides the registry and the run key.

    ``params``: keyword arguments of :class:`dlr.LogisticRegression`; ``fit_options``:
    ``checkpoint_every``, ``checkpoint_seconds``, ``keep_checkpoints`` of its ``fit``.
    """

    holdout: str
    gate: tuple[str, ...]
    promote: str = "auto"
    repin_holdout: bool = False
    params: dict = field(default_factory=dict)
    fit_options: dict = field(default_factory=dict)
    window_last: int | None = None
    window_within: timedelta | None = None
    lease_ttl: float = 60.0
    owner: str | None = None


class Outcome(NamedTuple):
    exit_code: int
    decision: str  # promoted | challenger | rejected | nothing-new | locked
    version: int | None
    reason: str
    record: dict | None
    repeated: bool = False  # the outcome of an earlier run with the same key


def parse_period(text: str) -> timedelta:
    """``30m``, ``1h``, ``1d``, ``1w``... as a timedelta."""
    match = PERIOD.match(str(text).strip())
    if match is None or int(match[1]) == 0:
        raise DlrError(f"cannot read period {text!r}: expected e.g. 30m, 1h, 1d or 1w")
    return timedelta(seconds=int(match[1]) * UNITS[match[2]])


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC."""
    try:
        t = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise DlrError(
            f"cannot read time {text!r}: expected ISO 8601, e.g. 2026-12-01T02:00Z"
        ) from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def run_key_for(scheduled: datetime | None, period: timedelta) -> str:
    """The run key of the scheduled run at ``scheduled`` (default: now), truncated to
    ``period`` since the Unix epoch: every retry within the period gets the same key.
    E.g. 2026-12-01T02:17:05Z with a period of 1d gives ``20261201T000000Z``."""
    t = (scheduled or datetime.now(UTC)).astimezone(UTC)
    step = int(period.total_seconds())
    start = int(t.timestamp()) // step * step
    return datetime.fromtimestamp(start, UTC).strftime("%Y%m%dT%H%M%SZ")


def check_run_key(key: str) -> str:
    if not RUN_KEY.match(key):
        raise DlrError(
            f"run key {key!r} must be 1-128 letters, digits, '.', '_' or '-' (a directory name)"
        )
    return key


def holdout_fingerprint(
    url: str,
    storage_options: dict | None = None,
    known: dict | None = None,
    dataset: Dataset | None = None,
) -> dict:
    """What identifies the pinned holdout: shape, dtype and a sha256 over its stored arrays
    (metadata and chunk files of X and y, by path within the group). The path itself is kept
    for information only: the same content elsewhere is the same holdout.

    ``files`` is a digest of the stored files' names, sizes, modification times and inodes
    (ETags on object storage). Given the ``known`` fingerprint of an earlier hash whose
    ``files`` are still these, the sha256 is taken from it instead of reading every file again;
    a file rewritten, replaced or copied has another modification time, inode or ETag, and is
    hashed. ``dataset``: the holdout already opened (:func:`dlr.dataset.open_dataset`).
    """
    ds = dataset or open_dataset(url, storage_options=storage_options)
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    root = root.rstrip("/")
    stored = [
        (file, info)
        for array in (ds.x.path, ds.y.path)
        for file, info in sorted(fs.find(f"{root}/{array}", detail=True).items())
    ]
    listing = hashlib.sha256()
    for file, info in stored:
        stamp = [info.get(k) for k in ("size", "mtime", "ino", "ETag", "LastModified")]
        listing.update(json.dumps([file[len(root) :], *map(str, stamp)]).encode())
    fingerprint = {
        "shape": [ds.n_samples, ds.n_features],
        "dtype": str(ds.x.dtype),
        "url": url,
        "files": listing.hexdigest(),
    }
    if known and known.get("files") == fingerprint["files"] and _same_shape(known, fingerprint):
        return {"sha256": known["sha256"], **fingerprint}
    digest = hashlib.sha256()
    for file, _ in stored:
        digest.update(file[len(root) :].encode())
        digest.update(fs.cat_file(file))
    return {"sha256": digest.hexdigest(), **fingerprint}


def _same_shape(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("shape", "dtype"))


def _same_holdout(a: dict, b: dict) -> bool:
    return a.get("sha256") == b.get("sha256") and _same_shape(a, b)


def retrain(
    registry_url: str,
    config: RetrainConfig,
    *,
    run_key: str,
    storage_options: dict | None = None,
    echo=print,
) -> Outcome:
    """Run (or resume, or report) the retraining run ``run_key`` on the registry."""
    check_run_key(run_key)
    thresholds = parse_gate(config.gate)
    if config.promote not in ("auto", "manual"):
        raise DlrError(f"promote must be 'auto' or 'manual', got {config.promote!r}")
    registry = Registry(registry_url, storage_options)
    earlier = registry.run_record(run_key)
    if earlier is not None and earlier.get("status") == "finished":
        return _repeated(earlier)
    try:
        lease = Lease.acquire(
            registry, owner=config.owner or default_owner(), run_key=run_key, ttl=config.lease_ttl
        )
    except LeaseHeld as e:
        return Outcome(LOCKED, "locked", None, str(e), None)
    with lease:
        registry.complete_history()  # of a change whose writer was killed before its event file
        earlier = registry.run_record(run_key)  # it may have finished while we waited
        if earlier is not None and earlier.get("status") == "finished":
            return _repeated(earlier)
        record = _Run(registry, config, thresholds, run_key, lease, storage_options, echo).run(
            earlier
        )
    return Outcome(
        record["exit_code"], record["decision"], record.get("version"), record["reason"], record
    )


def _repeated(record: dict) -> Outcome:
    return Outcome(
        record["exit_code"],
        record["decision"],
        record.get("version"),
        record["reason"],
        record,
        True,
    )


class _Run:
    """The stages of one run; each saves the run record it reached."""

    def __init__(self, registry, config, thresholds, run_key, lease, storage_options, echo):
        self.registry, self.config, self.thresholds = registry, config, thresholds
        self.run_key, self.lease, self.echo = run_key, lease, echo
        self.storage_options = storage_options
        self.timings: dict[str, float] = {}
        self.model: LogisticRegression | None = None  # the candidate, once trained here
        self.pinned: Dataset | None = None  # the pinned holdout, once opened here

    def _timed(self, stage: str, started: float) -> None:
        self.timings[stage] = round(self.timings.get(stage, 0) + time.perf_counter() - started, 4)

    def save(self, record: dict, encoded: bytes | None = None) -> dict:
        """Write ``record`` as run.json and return it jsonable; ``encoded``: its bytes, if made
        already (then ``record`` is jsonable already)."""
        if encoded is None:
            record = jsonable(record)
            encoded = serial.json_bytes(record)
        pause_point("run-record")  # crash and full-disk tests: before each write of run.json
        self.registry.save_run_file(self.run_key, "run.json", encoded)
        return record

    def run(self, earlier: dict | None) -> dict:
        if earlier is None or earlier.get("status") not in ("training", "evaluated"):
            earlier = self.plan()
            if earlier["status"] == "finished":
                return earlier
        if earlier["status"] == "training":
            earlier = self.train_and_evaluate(earlier)
        return self.publish(earlier)

    # -- stage 1: what to train on ------------------------------------------------------------
    def plan(self) -> dict:
        started = time.perf_counter()
        reg, cfg = self.registry, self.config
        champion = reg.alias("champion")
        trained = set(reg.version(champion).lineage.get("spans", ())) if champion else set()
        spans = window(reg.spans(), cfg.window_last, cfg.window_within)
        new = [s.id for s in spans if s.id not in trained]
        record = {
            "run_key": self.run_key,
            "registry": reg.url,
            "started_at": now_iso(),
            "champion": champion,
            "spans": {"trained": [s.id for s in spans], "new": new},
            "dlr_version": __version__,
        }
        if not new:
            reason = (
                "no span committed since the champion's training set"
                if champion
                else "the registry has no committed span to train on"
            )
            self._timed("plan", started)
            return self.save(
                {
                    **record,
                    "status": "finished",
                    "decision": "nothing-new",
                    "exit_code": NOTHING_NEW,
                    "reason": reason,
                    "version": None,
                    "finished_at": now_iso(),
                    "timings": self.timings,
                }
            )
        self.pinned = open_dataset(cfg.holdout, storage_options=self.storage_options)
        pinned = holdout_fingerprint(
            cfg.holdout, self.storage_options, known=reg.holdout, dataset=self.pinned
        )
        if reg.holdout is None or (cfg.repin_holdout and not _same_holdout(reg.holdout, pinned)):
            reg.pin_holdout(pinned, by=f"retrain {self.run_key}", run=self.run_key)
        elif not _same_holdout(reg.holdout, pinned):
            raise DlrError(
                f"the holdout '{cfg.holdout}' differs from the one pinned in '{reg.url}' "
                f"(sha256 {reg.holdout['sha256'][:12]}…, '{reg.holdout.get('url')}'); pass the "
                "pinned holdout, or --repin-holdout to pin this one"
            )
        elif reg.holdout.get("files") != pinned["files"]:  # hashed again, and the same
            reg.note_holdout_files(pinned["files"])
        self._timed("plan", started)
        return self.save(
            {**record, "status": "training", "holdout": pinned, "timings": self.timings}
        )

    # -- stage 2: train, evaluate, drift, gate -------------------------------------------------
    def _spans(self, ids: list[str]):
        by_id = {s.id: s for s in self.registry.spans(include_excluded=True)}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DlrError(f"span(s) {', '.join(missing)} of run {self.run_key} are gone")
        return [by_id[i] for i in ids]

    def train_and_evaluate(self, record: dict) -> dict:
        reg, cfg = self.registry, self.config
        self.timings = dict(record.get("timings") or {})
        spans = self._spans(record["spans"]["trained"])
        new_ids = set(record["spans"]["new"])
        new = [s for s in spans if s.id in new_ids]
        old = [s for s in spans if s.id not in new_ids]
        champion_v = record["champion"]
        champion = self._champion(record)
        started = time.perf_counter()
        self.echo(
            f"training on {len(spans)} span(s), {len(new)} new, "
            + (f"warm-started from version {champion_v}" if champion else "from zero")
        )
        # the new spans' holdout is opened while the model trains: opening waits on the
        # store's round trips, not on the CPU the training uses
        with ThreadPoolExecutor(1, thread_name_prefix="dlr-open-fresh") as opener:
            fresh = (
                opener.submit(holdout_source, reg, new)
                if any(s.holdout_rows for s in new)
                else None
            )
            model = self._fit(spans, champion)
        self._timed("train", started)
        self.model = model
        started = time.perf_counter()
        classes = np.asarray(model.classes_)
        holdouts = {
            "pinned": from_dataset(
                self.pinned or open_dataset(cfg.holdout, storage_options=self.storage_options)
            ),
            "fresh": fresh.result() if fresh is not None else None,
        }
        thetas = {"candidate": model.theta_} | ({"champion": champion.theta_} if champion else {})
        metrics = {"candidate": {}, "champion": {} if champion else None}
        curves = {}
        # the champion's metrics on this very holdout, from the run that evaluated it as its
        # candidate, when nothing they depend on has changed: the same bits as evaluating again
        earlier = self._earlier_pinned(champion_v, record["holdout"], classes) if champion else None
        models_on = {}  # per holdout, the models evaluated on it here
        for name, source in holdouts.items():
            done = earlier is not None and name == "pinned"
            models_on[name] = [w for w in thetas if not (done and w == "champion")]
            if source is not None:
                model._check_features(source)
        # both models and both holdouts in the same passes: one read of each holdout, plus
        # the AUC's refinement pass if a model needs one
        evaluated = iter(
            scoring.evaluate_sources(
                [
                    (source, [thetas[w] for w in models_on[name]])
                    for name, source in holdouts.items()
                    if source is not None
                ],
                classes,
                curve_bins=CURVE_BINS,
            )
        )
        for name, source in holdouts.items():
            results = next(evaluated) if source is not None else [None] * len(models_on[name])
            for who, result in zip(models_on[name], results, strict=True):
                counts = result.pop("score_counts", None) if result else None
                metrics[who][name] = result
                if counts is not None:
                    curves.setdefault(name, {})[who] = counts
        reused = None
        if earlier is not None:
            metrics["champion"]["pinned"], counts, reused = earlier
            curves.setdefault("pinned", {})["champion"] = counts
        self._timed("evaluate", started)
        started = time.perf_counter()
        # the new spans' train rows against the rest of the training set, from the summaries
        # the spans keep (written at ingest): no pass over the data
        shift = span_drift(reg, old, new, echo=self.echo) if old else None
        self._timed("drift", started)
        decision = decide(self.thresholds, metrics["candidate"], metrics["champion"], shift)
        if not decision.passed:
            outcome = "rejected"
        else:
            outcome = "promoted" if cfg.promote == "auto" else "challenger"
        params = {k: jsonable(v) for k, v in model.get_params().items()}
        return self.save(
            {
                **record,
                "status": "evaluated",
                "decision": outcome,
                "exit_code": EXIT_CODES[outcome],
                "reason": decision.reason,
                "gate": list(cfg.gate),
                "checks": [c._asdict() for c in decision.checks],
                "metrics": metrics,
                "metrics_method": scoring.METHOD,
                "reused": reused,
                "drift": shift,
                "curves": curves,
                "params": {**params, **cfg.fit_options, "promote": cfg.promote},
                "training": {
                    "solver": model.solver_,
                    "warm_start": champion is not None,
                    "n_iter": int(np.ravel(model.n_iter_)[0]),  # (1,) as in scikit-learn
                    "n_passes": int(model.n_passes_),
                    "converged": bool(model.converged_),
                    "loss_history": [float(v) for v in model.loss_history_],
                },
                "timings": self.timings,
            }
        )

    # -- stage 3: version, alias, report --------------------------------------------------------
    def publish(self, record: dict) -> dict:
        reg = self.registry
        pause_point("publish")  # crash tests: evaluated, nothing registered yet
        started = time.perf_counter()
        mine = [v for v in reg.versions() if v.lineage.get("run_key") == self.run_key]
        if mine:
            version = mine[-1].version
        else:
            model = self.model or self._trained_model(record)
            version = reg.register_version(model, self._lineage(record))
        self.echo(f"registered version {version} ({record['decision']})")
        pause_point("version-written")
        alias = {"promoted": "champion", "challenger": "challenger"}.get(record["decision"])
        if alias is not None:
            expected = record["champion"] if alias == "champion" else reg.alias("challenger")
            try:  # a no-op if a killed earlier attempt moved it already
                reg.move_alias(
                    alias,
                    version,
                    expected=expected,
                    run=self.run_key,
                    reason=record["reason"],
                    lease=self.lease,
                )
            except RegistryConflict as e:
                raise DlrError(f"version {version} registered but not made {alias}: {e}") from None
        pause_point("alias-moved")
        self._timed("publish", started)
        record = {
            **record,
            "status": "finished",
            "version": version,
            "finished_at": now_iso(),
            "timings": {**record.get("timings", {}), **self.timings},
        }
        pause_point("report")  # full-disk tests: before the report is written
        record = jsonable(record)
        files = report_files(record)
        for name, data in files.items():
            reg.save_run_file(self.run_key, name, data)
        return self.save(record, encoded=files["report.json"])  # the same bytes

    def _trained_model(self, record: dict) -> LogisticRegression:
        """The candidate of a run that crashed after stage 2, rebuilt from its checkpoint (the
        fit of stage 2 ended by saving its final state, so the weights are the same bits)."""
        return self._fit(self._spans(record["spans"]["trained"]), self._champion(record))

    def _earlier_pinned(self, version: int, holdout: dict, classes: np.ndarray):
        """(metrics, score counts, provenance) of version ``version`` on the
        pinned holdout, as the run that made it recorded them for its candidate — if that run
        evaluated the same holdout (sha256, shape, dtype) by the same method
        (:data:`dlr.scoring.METHOD`) with these classes; else None. The version's model is the
        candidate that run evaluated, bit for bit, so these are the metrics evaluating it again
        would give."""
        run_key = self.registry.version(version).lineage.get("run_key")
        earlier = self.registry.run_record(run_key) if run_key else None
        if not earlier or earlier.get("metrics_method") != scoring.METHOD:
            return None
        if not _same_holdout(earlier.get("holdout") or {}, holdout):
            return None
        pinned = ((earlier.get("metrics") or {}).get("candidate") or {}).get("pinned")
        counts = ((earlier.get("curves") or {}).get("pinned") or {}).get("candidate")
        if not pinned or counts is None or pinned.get("classes") != classes.tolist():
            return None
        provenance = {"champion": {"pinned": {"version": version, "run_key": run_key}}}
        return pinned, np.asarray(counts, np.int64), provenance

    def _champion(self, record: dict) -> LogisticRegression | None:
        """The champion the run started from (None on the first run)."""
        version, reg = record["champion"], self.registry
        return load(reg.model_url(version), reg.storage_options) if version else None

    def _fit(self, spans, champion: LogisticRegression | None) -> LogisticRegression:
        """The candidate: warm-started from ``champion``, checkpointed under the run, so a rerun
        resumes it and a fit that had finished comes back from its final checkpoint."""
        reg = self.registry
        model = LogisticRegression(**self.config.params)
        model.fit(
            training_source(reg, spans),
            init=champion,
            checkpoint=reg.checkpoint_url(self.run_key),
            resume=True,
            storage_options=reg.storage_options,
            **self.config.fit_options,
        )
        return model

    def _lineage(self, record: dict) -> dict:
        return jsonable(
            {
                "parent": record["champion"],
                "spans": record["spans"]["trained"],
                "new_spans": record["spans"]["new"],
                "holdout": record["holdout"],
                "params": record["params"],
                "dlr_version": __version__,
                "metrics": {
                    "pinned": _headline(record["metrics"]["candidate"]["pinned"]),
                    "fresh": _headline(record["metrics"]["candidate"]["fresh"]),
                    "champion": (
                        {h: _headline(m) for h, m in record["metrics"]["champion"].items()}
                        if record["metrics"]["champion"]
                        else None
                    ),
                },
                "drift": record["drift"],
                "decision": record["decision"],
                "reason": record["reason"],
                "timings": record["timings"],
                "training": {k: v for k, v in record["training"].items() if k != "loss_history"},
                "run_key": self.run_key,
            }
        )


def _headline(metrics: dict | None) -> dict | None:
    if metrics is None:
        return None
    return {k: metrics[k] for k in ("n_samples", "log_loss", "roc_auc", "accuracy")}


def print_outcome(outcome: Outcome, echo=print) -> None:
    """The short summary of a run (and that it was an earlier run's outcome, if so)."""
    if outcome.record is None or outcome.decision in ("nothing-new", "locked"):
        prefix = "earlier run: " if outcome.repeated else ""
        echo(f"{prefix}{outcome.decision}: {outcome.reason} (exit {outcome.exit_code})")
        return
    if outcome.repeated:
        echo(f"run {outcome.record['run_key']} already finished; its outcome:")
    echo(summary(outcome.record))
