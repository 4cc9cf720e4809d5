"""``LogisticRegression``: the scikit-learn-style shell around the engine and the solvers.

It validates parameters, turns its input into a :class:`dlr.sources.Source`, runs a solver
function on an :class:`dlr.objective.Objective`, and unpacks the result into fitted attributes.
"""

import json
import logging
import time
import warnings
from concurrent.futures import CancelledError
from numbers import Integral, Real

import dask.array as da
import numpy as np
import zarr
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning

from dlr import model_io, scoring
from dlr.checkpoint import CheckpointStore, check_compatible
from dlr.chunks import ChunkContext
from dlr.dataset import open_dataset
from dlr.engine import Engine
from dlr.errors import DataError, DlrError, NotFittedError
from dlr.kernel import chunk_logits
from dlr.linalg import single_threaded_blas
from dlr.memory import parse_size
from dlr.objective import Objective
from dlr.progress import ProgressReporter
from dlr.solvers import SOLVERS, choose, minimize
from dlr.sources import Source, from_arrays, from_dataset

log = logging.getLogger("dlr")

#: Parameters that shape the sequence of iterates: a checkpoint resumes only if they are equal.
TRAJECTORY = (
    "C",
    "l1_ratio",
    "fit_intercept",
    "standardize",
    "class_weight",
    "learning_rate",
    "line_search",
    "nesterov",
    "memory",
    "early_stopping",
    "n_iter_no_change",
)


class LogisticRegression(ClassifierMixin, BaseEstimator):
    """Logistic regression trained out-of-core, with scikit-learn's objective and attributes.

    Minimizes ``C·Σ s_i·loss_i + (1 − l1_ratio)/2·‖w‖² + l1_ratio·‖w‖₁`` (s_i: sample weight ×
    class weight; the intercept is never penalized), as scikit-learn 1.9 does. Two classes use
    the sigmoid model, more use the multinomial (softmax) one.

    Parameters
    ----------
    solver : "auto" (Newton where its Hessian pass is cheap, else L-BFGS: see
        :func:`dlr.solvers.choose`), "newton", "lbfgs" or "gd" (the seed lecture's fixed-step
        gradient descent). Newton and L-BFGS work in preconditioned coordinates of the same
        model (see :mod:`dlr.objective`).
    C : inverse regularization strength; ``np.inf`` for none (the seed's plain objective).
    l1_ratio : 0 for L2, 1 for L1, in between for elastic net.
    fit_intercept : learn the intercept (never penalized).
    standardize : train on features scaled to zero mean and unit variance (statistics from the
        first pass, weighted by ``sample_weight`` as ``StandardScaler().fit(X, sample_weight)``
        does); the penalty then applies to the standardized coefficients. ``coef_`` is always
        reported on the original scale.
    class_weight : None, "balanced" or {label: weight}.
    max_iter : maximum iterations. Each iteration is one pass over the data, plus one per extra
        line-search trial.
    tol : Newton/L-BFGS stop when max |∇F| ≤ tol in their coordinates (Newton also needs its
        predicted remaining decrease ≤ tol²·max(F, tol)); gradient descent stops when F
        changes by less than tol relative to the previous iteration (0 runs exactly
        ``max_iter``).
    learning_rate, line_search, nesterov : gradient descent's step α, Armijo backtracking of
        that step, and Nesterov momentum (not both).
    memory : correction pairs kept by L-BFGS.
    warm_start : start from the previous fit's coefficients.
    early_stopping, n_iter_no_change : with ``validation_data`` in ``fit``, stop once the
        validation loss has not improved for that many iterations and keep the best weights.
    cache_size : bytes of decoded chunks kept in memory between passes: an int, a string such
        as ``"512MB"``, ``0`` to stream every pass, or ``"auto"``: half of what the tighter of
        the host's memory and the cgroup limit (on a cluster, each worker's memory) leaves after
        streaming (see :mod:`dlr.memory`).
    verbose : report progress every iteration (a bar on a terminal, log records otherwise).

    Attributes
    ----------
    coef_ : (1, n_features) binary, (K, n_features) multinomial. intercept_ : (1,) or (K,).
    classes_ : (K,). n_features_in_. n_iter_ : iterations. n_passes_ : passes over the data,
    the first (validating, summarizing) pass included. loss_history_ : F at each iterate,
    starting point included. grad_norm_history_ : the optimality measure (max |∇F|) after each
    iteration. validation_loss_history_ (with validation data). converged_.
    solver_ : the solver used. state_ : the solver's final state.
    """

    def __init__(
        self,
        solver="auto",
        C=1.0,
        l1_ratio=0.0,
        fit_intercept=True,
        standardize=False,
        class_weight=None,
        max_iter=100,
        tol=1e-4,
        learning_rate=0.1,
        line_search=False,
        nesterov=False,
        memory=10,
        warm_start=False,
        early_stopping=False,
        n_iter_no_change=5,
        cache_size="auto",
        verbose=False,
    ):
        self.solver = solver
        self.C = C
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.standardize = standardize
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.learning_rate = learning_rate
        self.line_search = line_search
        self.nesterov = nesterov
        self.memory = memory
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.cache_size = cache_size
        self.verbose = verbose

    def _validate_params(self) -> None:
        choices = ("auto", *SOLVERS)
        if self.solver not in choices:
            raise DlrError(f"unknown solver {self.solver!r}; choose one of {', '.join(choices)}")
        if not (isinstance(self.C, Real) and self.C > 0):
            raise DlrError(f"C must be a positive number (np.inf for no penalty), got {self.C!r}")
        if not (isinstance(self.l1_ratio, Real) and 0 <= self.l1_ratio <= 1):
            raise DlrError(f"l1_ratio must be between 0 and 1, got {self.l1_ratio!r}")
        if not (
            isinstance(self.learning_rate, Real)
            and np.isfinite(self.learning_rate)
            and self.learning_rate > 0
        ):
            raise DlrError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if not (isinstance(self.max_iter, Integral) and self.max_iter >= 1):
            raise DlrError(f"max_iter must be an integer ≥ 1, got {self.max_iter!r}")
        if not (isinstance(self.tol, Real) and np.isfinite(self.tol) and self.tol >= 0):
            raise DlrError(f"tol must be ≥ 0, got {self.tol!r}")
        if not (isinstance(self.memory, Integral) and self.memory >= 1):
            raise DlrError(f"memory must be an integer ≥ 1, got {self.memory!r}")
        if not (isinstance(self.n_iter_no_change, Integral) and self.n_iter_no_change >= 1):
            raise DlrError(
                f"n_iter_no_change must be an integer ≥ 1, got {self.n_iter_no_change!r}"
            )
        if self.line_search and self.nesterov:
            raise DlrError("line_search and nesterov cannot be combined; choose one")
        parse_size(self.cache_size)

    def fit(
        self,
        X,
        y=None,
        sample_weight=None,
        *,
        validation_data=None,
        init=None,
        checkpoint=None,
        checkpoint_every=None,
        checkpoint_seconds=None,
        keep_checkpoints=3,
        resume=False,
        x_name="X",
        y_name="y",
        storage_options=None,
    ):
        """Fit on ``X`` (samples × features) and class labels ``y``.

        ``X`` is a NumPy, dask or zarr array (a zarr array's ``dimension_names`` may say it is
        features × samples), or the path/URL of a dlr dataset — then ``y`` is omitted, the arrays
        ``x_name``/``y_name`` of the group are used, and ``sample_weight`` may name an array of
        the group. ``validation_data`` is a dataset path or an (X, y) pair; ``init`` a fitted
        model (or a model path) whose coefficients start the fit.

        ``checkpoint`` (a directory or object-store URL, opened with ``storage_options``) saves
        the complete solver state every ``checkpoint_every`` iterations and/or every
        ``checkpoint_seconds`` (every iteration if neither is given), keeping the last
        ``keep_checkpoints``. With ``resume``, the fit continues from the newest intact
        checkpoint there — bit-identical to a run that was never interrupted — or starts afresh
        if there is none.
        """
        self._validate_params()
        if y is None and not (_is_path(X) or isinstance(X, Source)):
            raise DataError(
                "LogisticRegression requires y to be passed, but the target y is None "
                "(only a dataset path carries its own labels)"
            )
        started = time.perf_counter()
        source, decoded = _training_source(X, y, sample_weight, x_name, y_name, storage_options)
        # Every solver but the seed's gradient descent works in scaled coordinates, from the
        # feature moments of the first pass (see dlr.objective).
        precondition = self.solver != "gd"
        engine = Engine(
            source, cache_size=self.cache_size, moments=self.standardize or precondition
        )
        summary = engine.summarize()
        validation, validation_summary = None, None
        if validation_data is not None:
            vsource = _validation_source(validation_data, x_name, y_name, storage_options, decoded)
            if vsource.n_features != source.n_features:
                raise DlrError(
                    f"validation data has {vsource.n_features} features; the training data "
                    f"has {source.n_features}"
                )
            validation = Engine(vsource, cache_size=self.cache_size, get=engine.get)
            validation_summary = validation.summarize()
        elif self.early_stopping:
            raise DlrError("early_stopping needs validation_data")
        objective = Objective(
            engine,
            summary,
            C=float(self.C),
            l1_ratio=float(self.l1_ratio),
            fit_intercept=self.fit_intercept,
            standardize=self.standardize,
            precondition=precondition,
            class_weight=self.class_weight,
            validation=validation,
            validation_summary=validation_summary,
        )
        classes = objective.labels.classes
        labels = decoded[classes] if decoded is not None else classes
        start = self._starting_point(objective, labels, init, storage_options)
        solver = choose(self.solver, objective.n_params, source.n_samples)
        run = {
            "params": {
                "solver": solver,
                # the coordinates θ is saved in (checkpoints written before preconditioning
                # hold unscaled θ and must not be resumed as scaled)
                "solver_coordinates": "preconditioned" if precondition else "original",
                **{k: _jsonable(getattr(self, k)) for k in TRAJECTORY},
            },
            "data": _jsonable(source.fingerprint),
            "validation": _jsonable(validation.source.fingerprint) if validation else None,
        }
        store = None
        if checkpoint is not None:
            store = CheckpointStore(
                checkpoint, keep=keep_checkpoints, storage_options=storage_options
            )
        elif resume:
            raise DlrError("resume needs the checkpoint directory to resume from")
        watcher = _Watcher(
            self, objective, engine, store, run, checkpoint_every, checkpoint_seconds
        )
        if resume:
            start = watcher.resume(start)
        try:
            with single_threaded_blas():
                state = minimize(
                    solver,
                    objective,
                    start,
                    max_iter=self.max_iter,
                    tol=self.tol,
                    l1=objective.l1,
                    on_iteration=watcher,
                    learning_rate=self.learning_rate,
                    line_search=self.line_search,
                    nesterov=self.nesterov,
                    memory=self.memory,
                )
        except (OSError, TimeoutError, CancelledError) as e:
            if engine.client is None:
                raise
            raise DlrError(watcher.lost_scheduler_message(e)) from None
        except KeyboardInterrupt as e:
            e.dlr_resume = watcher.resume_hint()  # for the CLI's one-line message
            if e.dlr_resume:
                e.add_note(e.dlr_resume)
            raise
        finally:
            watcher.close()
        watcher.finish(state)
        theta = watcher.best_theta if watcher.best_theta is not None else state.theta
        self._set_coefficients(objective.effective(theta))
        self.classes_ = labels
        self.n_features_in_ = source.n_features
        self.solver_ = solver
        self.state_ = state
        self.n_iter_ = state.iteration
        self.n_passes_ = watcher.passes_before + engine.n_passes
        self.loss_history_ = np.array(state.loss_history)
        self.grad_norm_history_ = np.array(watcher.grad_norms)
        if validation is not None:
            self.validation_loss_history_ = np.array(watcher.validation_history)
        self.converged_ = bool(state.converged)
        self.cached_bytes_ = engine.cached_bytes
        self.fit_seconds_ = time.perf_counter() - started
        self.data_fingerprint_ = source.fingerprint
        if not (state.converged or watcher.stopped_early or self.tol == 0):
            _warn_not_converged(self, solver, state)
        return self

    def _starting_point(
        self, objective: Objective, classes: np.ndarray, init, storage_options=None
    ) -> np.ndarray:
        """θ₀: zeros, or the coefficients of ``init`` / of the previous fit (``warm_start``)."""
        previous = None
        if init is not None:
            previous = load(init, storage_options) if isinstance(init, str) else init
        elif self.warm_start and hasattr(self, "coef_"):
            previous = self
        if previous is None:
            return np.zeros(objective.n_params)
        if not np.array_equal(np.asarray(previous.classes_), classes):
            raise DlrError(
                f"cannot start from a model with classes {np.asarray(previous.classes_).tolist()}: "
                f"the data has classes {np.asarray(classes).tolist()}"
            )
        if previous.coef_.shape[1] != objective.n_features:
            raise DlrError(
                f"cannot start from a model with {previous.coef_.shape[1]} features: the data "
                f"has {objective.n_features}"
            )
        theta_eff = np.column_stack([previous.coef_, previous.intercept_])
        return objective.from_effective(theta_eff)

    def _set_coefficients(self, theta_eff: np.ndarray) -> None:
        coef, intercept = theta_eff[:, :-1].copy(), theta_eff[:, -1].copy()
        if coef.shape[0] > 1:
            # A common shift of all classes' intercepts (or, unpenalized, of all coefficient
            # rows) leaves a softmax model unchanged: report the centred representative.
            intercept -= intercept.mean()
            if np.isinf(self.C):
                coef -= coef.mean(axis=0)
        self.coef_, self.intercept_ = coef, intercept

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("this LogisticRegression is not fitted yet; call fit first")

    @property
    def theta_(self) -> np.ndarray:
        """[coef_ | intercept_] (k, n_features + 1), as the kernels use it."""
        return np.column_stack([self.coef_, self.intercept_])

    def decision_function(self, X, *, x_name="X", storage_options=None):
        """Logits: (n,) binary or (n, K); NumPy for NumPy input, a lazy dask array otherwise."""
        self._check_fitted()
        if isinstance(X, np.ndarray | list):
            source = from_arrays(X)
            self._check_features(source)
            check = ChunkContext(source.origin, 0, 0, source.n_samples)
            return chunk_logits(source.x.arr, self.theta_, samples_first=True, check=check)
        source = _source(X, None, None, x_name=x_name, y_name=None, storage_options=storage_options)
        self._check_features(source)
        return scoring.logits(source, self.theta_)

    def _check_features(self, source: Source) -> None:
        if source.n_features != self.n_features_in_:
            raise DataError(
                f"X has {source.n_features} features, but LogisticRegression is expecting "
                f"{self.n_features_in_} features as input ({source.origin}; the model was "
                f"fitted on {self.n_features_in_})"
            )

    def predict_proba(self, X, **kwargs):
        """(n, K) class probabilities (lazy on dask/zarr/path input)."""
        z = self.decision_function(X, **kwargs)
        if isinstance(z, da.Array):
            k = len(self.classes_)
            chunks = (z.chunks[0], (k,))
            return z.map_blocks(
                scoring.probabilities,
                chunks=chunks,
                new_axis=1 if z.ndim == 1 else None,
                dtype=np.float64,
            )
        return scoring.probabilities(z)

    def predict_log_proba(self, X, **kwargs):
        return _map(np.log, self.predict_proba(X, **kwargs))

    def predict(self, X, **kwargs):
        """Predicted labels from ``classes_`` (lazy on dask/zarr/path input)."""
        proba = self.predict_proba(X, **kwargs)
        classes = np.asarray(self.classes_)
        if isinstance(proba, da.Array):
            return proba.map_blocks(
                lambda p: classes[p.argmax(axis=1)], drop_axis=1, dtype=classes.dtype
            )
        return classes[proba.argmax(axis=1)]

    def score(self, X, y, sample_weight=None) -> float:
        """(Weighted) mean accuracy on (X, y)."""
        pred = self.predict(X)
        truth = y if isinstance(y, da.Array) else np.asarray(y)
        hits = pred == truth
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            accuracy = (hits * sample_weight).sum() / sample_weight.sum()
        else:
            accuracy = hits.mean()
        return float(accuracy.compute() if isinstance(accuracy, da.Array) else accuracy)

    def save(self, path: str, *, overwrite: bool = True, storage_options=None) -> None:
        """Write the fitted model as a directory or object-store prefix (JSON + .npy),
        atomically (see :mod:`dlr.model_io`)."""
        self._check_fitted()
        params = {k: v for k, v in self.get_params().items() if k != "class_weight"}
        meta = {
            "estimator": "LogisticRegression",
            "params": _jsonable(params),
            "class_weight": _jsonable(self.class_weight),
            "classes": np.asarray(self.classes_).tolist(),
            "n_features_in": int(self.n_features_in_),
            "solver": self.solver_,
            "n_iter": int(self.n_iter_),
            "n_passes": int(self.n_passes_),
            "converged": bool(self.converged_),
            "loss_history": [float(v) for v in self.loss_history_],
            "grad_norm_history": [float(v) for v in self.grad_norm_history_],
            "validation_loss_history": [
                float(v) for v in getattr(self, "validation_loss_history_", [])
            ],
            "data": self.data_fingerprint_,
        }
        model_io.save_model(
            path,
            meta,
            {"coef": self.coef_, "intercept": self.intercept_},
            overwrite=overwrite,
            storage_options=storage_options,
        )


class _Watcher:
    """The per-iteration callback: progress reports, validation history, early stopping,
    checkpoints — and, on resume, the restoring of all of these."""

    def __init__(self, model, objective, engine, store, run, every, seconds):
        self.model, self.engine, self.store, self.run = model, engine, store, run
        self.reporter = ProgressReporter(model.max_iter) if model.verbose else None
        self.validation = objective.validation is not None
        self.validation_history: list[float] = []
        self.grad_norms: list[float] = []
        self.best_theta = None
        self.best = np.inf
        self.since_best = 0
        self.stopped_early = False
        self.passes_before = 0
        self.every = every if every or seconds else 1
        self.seconds = seconds
        self.last_saved = time.monotonic()
        self.last_checkpoint = None

    def __call__(self, state, progress) -> bool:
        if self.reporter is not None:
            self.reporter(progress)
        self.grad_norms.append(progress.grad_norm)
        stop = self._track_validation(state, progress)
        if self.store is not None and (stop or self._checkpoint_due(state)):
            self._save(state)
        return stop

    def _track_validation(self, state, progress) -> bool:
        if not self.validation:
            return False
        if not self.validation_history:
            self.validation_history.append(float(state.ev.validation_loss))
        loss = float(progress.validation_loss)
        self.validation_history.append(loss)
        if not self.model.early_stopping:
            return False
        if loss < self.best:
            self.best, self.best_theta, self.since_best = loss, state.theta, 0
            return False
        self.since_best += 1
        self.stopped_early = self.since_best >= self.model.n_iter_no_change
        return self.stopped_early

    def _checkpoint_due(self, state) -> bool:
        if self.every and state.iteration % self.every == 0:
            return True
        return bool(self.seconds) and time.monotonic() - self.last_saved >= self.seconds

    def finish(self, state) -> None:
        """Checkpoint the final state too, unless it was just saved."""
        if self.store is not None and (
            self.last_checkpoint is None or self.last_checkpoint[1] != state.iteration
        ):
            self._save(state)

    def _save(self, state) -> None:
        payload = {
            "state": state,
            "run": json.dumps(self.run, sort_keys=True),
            "passes": self.passes_before + self.engine.n_passes,
            "validation_history": tuple(self.validation_history),
            "grad_norm_history": tuple(self.grad_norms),
            "best": self.best,
            "best_theta": self.best_theta,
            "since_best": self.since_best,
        }
        self.last_checkpoint = (self.store.save(state.iteration, payload), state.iteration)
        self.last_saved = time.monotonic()

    def resume(self, start):
        """The newest checkpoint's state (after checking it belongs to this run), or ``start``."""
        found = self.store.load_latest()
        if found is None:
            log.info("no checkpoint in %s yet: starting from the beginning", self.store.url)
            return start
        name, iteration, payload = found
        check_compatible(
            json.loads(payload["run"]),
            json.loads(json.dumps(self.run)),
            f"checkpoint '{self.store.url}/{name}'",
        )
        self.passes_before = payload["passes"]
        self.validation_history = list(payload["validation_history"])
        self.grad_norms = list(payload["grad_norm_history"])
        self.best, self.best_theta = payload["best"], payload["best_theta"]
        self.since_best = payload["since_best"]
        self.last_checkpoint = (name, iteration)
        log.info("resuming from checkpoint %s/%s (iteration %d)", self.store.url, name, iteration)
        return payload["state"]

    def resume_hint(self) -> str | None:
        """Where a stopped run can continue from, in words; None without a checkpoint."""
        if self.last_checkpoint is None:
            return None
        name, iteration = self.last_checkpoint
        return (
            f"the last checkpoint is iteration {iteration} ('{self.store.url}/{name}'): run the "
            "same command again with --resume (resume=True) to continue from it"
        )

    def lost_scheduler_message(self, error) -> str:
        address = getattr(self.engine.client.scheduler, "address", "?")
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
        text = f"lost the connection to the dask scheduler at {address} ({reason})"
        if self.last_checkpoint is not None:
            name, iteration = self.last_checkpoint
            return (
                f"{text}; the last checkpoint is iteration {iteration} "
                f"('{self.store.url}/{name}'): run the same command again with --resume "
                "(resume=True) to continue from it"
            )
        if self.store is not None:
            return f"{text}; no checkpoint was written yet: run the same command again"
        return f"{text}; train with --checkpoint DIR (checkpoint=...) to be able to resume"

    def close(self) -> None:
        if self.reporter is not None:
            self.reporter.close()


def _warn_not_converged(model, solver, state) -> None:
    """Say why the fit stopped short, what to change, and whether that changes the model."""
    same = "(neither changes the model)"
    if state.stalled:
        why = "the line search could not decrease the loss any further (rounding)"
        hint = f"the loss is flat to rounding here: raise tol, or use solver='newton' {same}"
    else:
        why = f"it reached max_iter={model.max_iter}"
        hint = {
            "gd": "increase max_iter or learning_rate, set line_search=True or nesterov=True, "
            "or use solver='newton' or 'lbfgs' (none of these changes the model); "
            "standardize=True also conditions badly scaled features but changes the model "
            "(it penalizes the standardized coefficients)",
            "lbfgs": "increase max_iter, or use solver='newton', whose passes also compute the "
            f"Hessian {same}",
            "newton": f"increase max_iter {same}; if the classes are perfectly separable and "
            "C=inf there is no optimum: a finite C changes the model",
        }[solver]
    warnings.warn(
        f"dlr LogisticRegression (solver '{solver}') stopped before converging: {why}; {hint}",
        ConvergenceWarning,
        stacklevel=3,
    )


def load(path: str, storage_options: dict | None = None) -> LogisticRegression:
    """Load a model written by :meth:`LogisticRegression.save` (no code is executed)."""
    meta, arrays = model_io.load_model(path, storage_options)
    known = LogisticRegression().get_params()
    params = {k: _from_json(v) for k, v in meta.get("params", {}).items() if k in known}
    model = LogisticRegression(**params)
    model.class_weight = meta.get("class_weight")
    if isinstance(model.class_weight, dict):
        model.class_weight = {
            int(k) if k.lstrip("-").isdigit() else k: v for k, v in model.class_weight.items()
        }
    model.coef_ = arrays["coef"]
    model.intercept_ = arrays["intercept"]
    model.classes_ = np.array(meta["classes"])
    model.n_features_in_ = meta["n_features_in"]
    model.solver_ = meta.get("solver")
    model.n_iter_ = meta["n_iter"]
    model.n_passes_ = meta["n_passes"]
    model.converged_ = meta["converged"]
    model.loss_history_ = np.array(meta["loss_history"], dtype=np.float64)
    model.grad_norm_history_ = np.array(meta.get("grad_norm_history", []), dtype=np.float64)
    if meta.get("validation_loss_history"):
        model.validation_loss_history_ = np.array(meta["validation_loss_history"])
    model.data_fingerprint_ = meta["data"]
    return model


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and np.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_json(value):
    return {"inf": np.inf, "-inf": -np.inf}.get(value, value) if isinstance(value, str) else value


def _map(f, a):
    return a.map_blocks(f) if isinstance(a, da.Array) else f(a)


def _training_source(X, y, sample_weight, x_name, y_name, storage_options):
    """The training source and, for in-memory non-numeric labels, the label decoding table."""
    decoded = None
    if isinstance(y, list | tuple | np.ndarray) and np.asarray(y).dtype.kind in "USO":
        decoded, y = np.unique(np.asarray(y), return_inverse=True)
    return _source(
        X, y, sample_weight, x_name=x_name, y_name=y_name, storage_options=storage_options
    ), decoded


def _validation_source(data, x_name, y_name, storage_options, decoded) -> Source:
    if isinstance(data, tuple) and len(data) == 2:
        Xv, yv = data
        if decoded is not None:
            yv = np.searchsorted(decoded, np.asarray(yv))
        return from_arrays(Xv, yv)
    return _source(data, None, None, x_name=x_name, y_name=y_name, storage_options=storage_options)


def _is_path(X) -> bool:
    return isinstance(X, str) or hasattr(X, "__fspath__")


def _source(X, y, sample_weight, *, x_name, y_name, storage_options) -> Source:
    if isinstance(X, Source):  # e.g. the committed spans of a registry (dlr.spanset)
        if y is not None or sample_weight is not None:
            raise DlrError("a Source carries its own labels and weights; pass it alone")
        return X
    if _is_path(X):
        if y is not None:
            raise DlrError("pass either a dataset path, or arrays X and y, not a path and y")
        weight_name = sample_weight if isinstance(sample_weight, str) else None
        source = from_dataset(
            open_dataset(
                str(X),
                x=x_name,
                y=y_name,
                sample_weight=weight_name,
                storage_options=storage_options,
            )
        )
        if sample_weight is not None and weight_name is None:
            raise DlrError("with a dataset path, sample_weight names an array of the dataset")
        return source
    if isinstance(X, zarr.Group):
        raise DlrError("pass the dataset's path, or its arrays, rather than a zarr group")
    return from_arrays(X, y, sample_weight)
