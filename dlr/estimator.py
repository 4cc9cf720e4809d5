"""``LogisticRegression``: the scikit-learn-style shell around the training run.

It validates parameters, turns its input into a :class:`dlr.sources.Source`
(:mod:`dlr.inputs`), builds the :class:`dlr.objective.Objective`, the solver and the start,
runs :func:`dlr.training.train`, and unpacks the result into the fitted attributes of
:class:`dlr.model_io.FittedModel`.
"""

import time
import warnings
from numbers import Integral, Real

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning

from dlr import inputs, model_io, scoring, warm
from dlr.chunks import ChunkContext
from dlr.engine import Engine, Labels, Point, check_fits
from dlr.errors import DataError, DlrError, InvalidParameterError, NotFittedError
from dlr.kernel import chunk_logits
from dlr.memory import parse_size
from dlr.model_io import FittedModel
from dlr.objective import Objective
from dlr.solvers import SOLVERS, choose
from dlr.sources import Source, from_arrays
from dlr.training import Checkpointing, TrainResult, train

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
    coef_, intercept_, classes_, n_features_in_, solver_, n_iter_, n_passes_, converged_, \
loss_history_, grad_norm_history_, validation_loss_history_, data_fingerprint_
        What the fit learned: the fields of :class:`dlr.model_io.FittedModel` (documented
        there), which :meth:`save` writes and :func:`load` reads. ``coef_`` is (1, n_features)
        for two classes, (K, n_features) for K ≥ 3, on the original feature scale;
        ``n_iter_`` an array of shape (1,); ``n_passes_`` counts the first (validating) pass.
    state_ : GDState, NewtonState or LbfgsState
        The solver's final state (not saved with the model).
    cached_bytes_ : int
        Bytes of decoded chunks the fit kept in memory.
    fit_seconds_ : float
        Wall time of the fit.
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
            raise InvalidParameterError(
                f"unknown solver {self.solver!r}; choose one of {', '.join(choices)}"
            )
        if not (isinstance(self.C, Real) and self.C > 0):
            raise InvalidParameterError(
                f"C must be a positive number (np.inf for no penalty), got {self.C!r}"
            )
        if not (isinstance(self.l1_ratio, Real) and 0 <= self.l1_ratio <= 1):
            raise InvalidParameterError(f"l1_ratio must be between 0 and 1, got {self.l1_ratio!r}")
        if not (
            isinstance(self.learning_rate, Real)
            and np.isfinite(self.learning_rate)
            and self.learning_rate > 0
        ):
            raise InvalidParameterError(
                f"learning_rate must be a positive number, got {self.learning_rate!r}"
            )
        if not (isinstance(self.max_iter, Integral) and self.max_iter >= 0):
            raise InvalidParameterError(f"max_iter must be an integer ≥ 0, got {self.max_iter!r}")
        if not (isinstance(self.tol, Real) and np.isfinite(self.tol) and self.tol >= 0):
            raise InvalidParameterError(f"tol must be ≥ 0, got {self.tol!r}")
        if not (isinstance(self.memory, Integral) and self.memory >= 1):
            raise InvalidParameterError(f"memory must be an integer ≥ 1, got {self.memory!r}")
        if not (isinstance(self.n_iter_no_change, Integral) and self.n_iter_no_change >= 1):
            raise InvalidParameterError(
                f"n_iter_no_change must be an integer ≥ 1, got {self.n_iter_no_change!r}"
            )
        if self.line_search and self.nesterov:
            raise InvalidParameterError("line_search and nesterov cannot be combined; choose one")
        try:
            parse_size(self.cache_size)
        except DlrError as e:
            raise InvalidParameterError(str(e)) from None

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
        started = time.perf_counter()
        where = {"x_name": x_name, "y_name": y_name, "storage_options": storage_options}
        source, decoded = inputs.training_source(X, y, sample_weight, **where)
        class_weight = _encoded_class_weight(self.class_weight, decoded)
        previous = self._previous(init, storage_options)
        weights = None
        if previous is not None:
            weights = warm.exact_weights(previous, self.fit_intercept, self.standardize)
        first = self._first_point(previous, weights, source, decoded, class_weight)
        # Every solver but the seed's gradient descent works in scaled coordinates, from the
        # feature moments of the first pass (see dlr.objective).
        precondition = self.solver != "gd"
        engine = Engine(
            source,
            cache_size=self.cache_size,
            moments=self.standardize or precondition,
            first=first,
        )
        summary = engine.summarize()
        validation, validation_summary = None, None
        if validation_data is not None:
            vsource = inputs.validation_source(validation_data, decoded, **where)
            if vsource.n_features != source.n_features:
                raise DlrError(
                    f"validation data has {vsource.n_features} features; the training data "
                    f"has {source.n_features}"
                )
            vfirst = None  # the validation loss at a warm start, in its first pass too
            if first is not None:
                vfirst = Point(first.theta, Labels(first.labels.classes), hessian=False)
            validation = Engine(vsource, cache_size=self.cache_size, get=engine.get, first=vfirst)
            validation_summary = validation.summarize()
        objective = Objective(
            engine,
            summary,
            C=float(self.C),
            l1_ratio=float(self.l1_ratio),
            fit_intercept=self.fit_intercept,
            standardize=self.standardize,
            precondition=precondition,
            class_weight=class_weight,
            validation=validation,
            validation_summary=validation_summary,
        )
        classes = objective.labels.classes
        labels = decoded[classes] if decoded is not None else classes
        start = self._starting_point(objective, labels, previous)
        name = choose(self.solver, objective.n_params, source.n_samples)
        solver = SOLVERS[name](tol=self.tol, l1=objective.l1, **self._hyperparameters(name))
        carried = {} if previous is None else warm.carried_memory(objective, previous, name)
        saving = None
        if checkpoint is not None:
            params = {
                "solver": name,
                # the coordinates θ is saved in (checkpoints written before preconditioning
                # hold unscaled θ and must not be resumed as scaled)
                "solver_coordinates": "preconditioned" if precondition else "original",
                **{k: getattr(self, k) for k in TRAJECTORY},
            }
            saving = Checkpointing(
                checkpoint,
                params,
                every=checkpoint_every,
                seconds=checkpoint_seconds,
                keep=keep_checkpoints,
                storage_options=storage_options,
            )
        result = train(
            objective,
            solver,
            start,
            theta0_effective=weights,
            carried=carried,
            max_iter=self.max_iter,
            patience=self.n_iter_no_change if self.early_stopping else None,
            checkpoint=saving,
            resume=resume,
            verbose=self.verbose,
        )
        coef, intercept = self._coefficients(objective.effective(result.theta))
        fitted = FittedModel(
            coef_=coef,
            intercept_=intercept,
            classes_=labels,
            n_features_in_=source.n_features,
            solver_=name,
            n_iter_=np.array([result.n_iter], dtype=np.int32),
            n_passes_=result.n_passes,
            converged_=result.converged,
            loss_history_=result.loss_history,
            grad_norm_history_=result.grad_norm_history,
            validation_loss_history_=result.validation_loss_history,
            data_fingerprint_=source.fingerprint,
            lbfgs_memory_=warm.saved_memory(objective, result.state),
        )
        model_io.set_fitted(self, fitted)
        self.state_ = result.state
        self.cached_bytes_ = engine.cached_bytes
        self.fit_seconds_ = time.perf_counter() - started
        if not (result.converged or result.stopped_early or self.tol == 0):
            _warn_not_converged(self, name, result)
        return self

    def _hyperparameters(self, solver: str) -> dict:
        """The options of ``solver``'s constructor that this estimator sets."""
        return {
            "gd": {
                "learning_rate": self.learning_rate,
                "line_search": self.line_search,
                "nesterov": self.nesterov,
            },
            "lbfgs": {"memory": self.memory},
            "newton": {},
        }[solver]

    def _previous(self, init, storage_options=None):
        """The model a fit starts from: ``init`` (a model or its path), the previous fit with
        ``warm_start``, or None."""
        if init is not None:
            return load(init, storage_options) if isinstance(init, str) else init
        if self.warm_start and hasattr(self, "coef_"):
            return self
        return None

    def _first_point(self, previous, weights, source: Source, decoded, class_weight):
        """Where the first pass also evaluates the kernel for a warm start (see
        :func:`dlr.warm.first_point`), or None."""
        if previous is None:
            return None
        k = 1 if len(previous.classes_) == 2 else len(previous.classes_)
        n_params = k * (source.n_features + int(self.fit_intercept))
        name = choose(self.solver, n_params, source.n_samples)
        hessian = SOLVERS[name](tol=self.tol, **self._hyperparameters(name)).hessian
        return warm.first_point(
            weights, previous.classes_, source.n_features, decoded, class_weight, hessian
        )

    def _starting_point(self, objective: Objective, classes: np.ndarray, previous) -> np.ndarray:
        """θ₀: zeros, or the coefficients of ``previous`` (after checking it fits the data)."""
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

    def _coefficients(self, theta_eff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``coef_`` (k, n) and ``intercept_`` (k,) of Θ_eff (k, n + 1)."""
        coef, intercept = theta_eff[:, :-1].copy(), theta_eff[:, -1].copy()
        if coef.shape[0] > 1:
            # A common shift of all classes' intercepts (or, unpenalized, of all coefficient
            # rows) leaves a softmax model unchanged: report the centred representative.
            intercept -= intercept.mean()
            if np.isinf(self.C):
                coef -= coef.mean(axis=0)
        return coef, intercept

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("this LogisticRegression is not fitted yet; call fit first")

    @property
    def theta_(self) -> np.ndarray:
        """[coef_ | intercept_] (k, n_features + 1), as the kernels use it."""
        return np.column_stack([self.coef_, self.intercept_])

    def decision_function(self, X, *, x_name="X", storage_options=None):
        """Logits: (n,) binary or (n, K); NumPy for NumPy input, a lazy dask array otherwise
        (refused at once, naming the chunk, if streaming the chunks would not fit in memory)."""
        self._check_fitted()
        if isinstance(X, np.ndarray | list):
            source = from_arrays(X)
            self._check_features(source)
            check = ChunkContext(source.origin, 0, 0, source.n_samples)
            return chunk_logits(source.x.arr, self.theta_, samples_first=True, check=check)
        source = inputs.source(X, x_name=x_name, y_name=None, storage_options=storage_options)
        self._check_features(source)
        check_fits(source, "predict")  # computing the lazy result streams every chunk
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
        model_io.save_model(
            path,
            self.get_params(),
            model_io.fitted_of(self),
            overwrite=overwrite,
            storage_options=storage_options,
        )


def _warn_not_converged(model, solver: str, result: TrainResult) -> None:
    """Say why the fit stopped short, what to change, and whether that changes the model."""
    same = "(neither changes the model)"
    if result.stalled:
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
    params, fitted = model_io.load_model(path, storage_options)
    known = LogisticRegression().get_params()
    model = LogisticRegression(**{k: v for k, v in params.items() if k in known})
    model_io.set_fitted(model, fitted)
    return model


def _map(f, a):
    return a.map_blocks(f) if isinstance(a, da.Array) else f(a)


def _encoded_class_weight(class_weight, decoded):
    """``class_weight`` with its labels replaced by their codes when in-memory labels were
    encoded (``decoded``: the sorted labels, code → label); labels not in y are an error."""
    if decoded is None or not isinstance(class_weight, dict):
        return class_weight
    codes = {label: code for code, label in enumerate(decoded.tolist())}
    unknown = [label for label in class_weight if label not in codes]
    if unknown:
        raise DlrError(
            f"class_weight names labels {sorted(map(str, unknown))} absent from y "
            f"(classes {decoded.tolist()})"
        )
    return {codes[label]: weight for label, weight in class_weight.items()}
