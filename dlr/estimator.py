"""``LogisticRegression``: the scikit-learn-style shell around the engine and the solvers.

It validates parameters, turns its input into a :class:`dlr.sources.Source`, runs a solver
function on an :class:`dlr.engine.Engine`, and unpacks the result into fitted attributes.
"""

import time

import dask.array as da
import numpy as np
import zarr

from dlr import model_io, scoring
from dlr.dataset import open_dataset
from dlr.engine import Engine
from dlr.errors import DlrError, NotFittedError
from dlr.kernel import ChunkContext, chunk_logits, single_threaded_blas
from dlr.logistic import sigmoid
from dlr.memory import parse_size
from dlr.progress import ProgressReporter
from dlr.solvers import gd_init, gradient_descent
from dlr.sources import Source, from_arrays, from_dataset

SOLVERS = ("gd",)


class LogisticRegression:
    """Binary logistic regression trained out-of-core by batch gradient descent.

    Parameters
    ----------
    solver : "gd" — the seed lecture's fixed-step gradient descent.
    learning_rate : step α in w ← w − α·dw.
    max_iter : maximum number of iterations (each one is one pass over the data).
    tol : stop when the loss changes by less than ``tol`` relative to the previous iteration;
        0 runs exactly ``max_iter`` iterations.
    cache_size : bytes of decoded chunks to keep in memory between passes: an int, a string such
        as ``"512MB"``, ``0`` to stream every pass, or ``"auto"`` (half the available memory, or
        half the workers' memory limits on a distributed cluster).
    verbose : report progress every iteration (a bar on a terminal, log records otherwise).

    Fitted attributes: ``coef_`` (1, n_features), ``intercept_`` (1,), ``classes_`` [0, 1],
    ``n_features_in_``, ``n_iter_``, ``loss_history_`` (n_iter_,) with J before each update,
    ``n_passes_`` and ``data_fingerprint_``.
    """

    def __init__(
        self,
        solver="gd",
        learning_rate=0.1,
        max_iter=100,
        tol=1e-4,
        cache_size="auto",
        verbose=False,
    ):
        self.solver = solver
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.tol = tol
        self.cache_size = cache_size
        self.verbose = verbose

    def get_params(self, deep=True) -> dict:
        return {
            k: getattr(self, k)
            for k in ("solver", "learning_rate", "max_iter", "tol", "cache_size", "verbose")
        }

    def set_params(self, **params):
        for key, value in params.items():
            if key not in self.get_params():
                raise ValueError(f"invalid parameter {key!r} for LogisticRegression")
            setattr(self, key, value)
        return self

    def _validate_params(self) -> None:
        if self.solver not in SOLVERS:
            raise DlrError(f"unknown solver {self.solver!r}; choose one of {', '.join(SOLVERS)}")
        if not (np.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise DlrError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if not (isinstance(self.max_iter, int | np.integer) and self.max_iter >= 1):
            raise DlrError(f"max_iter must be an integer ≥ 1, got {self.max_iter!r}")
        if not (np.isfinite(self.tol) and self.tol >= 0):
            raise DlrError(f"tol must be ≥ 0, got {self.tol!r}")
        parse_size(self.cache_size)

    def fit(self, X, y=None, *, x_name="X", y_name="y", storage_options=None):
        """Fit on ``X`` (samples × features) and labels ``y`` in {0, 1}.

        ``X`` is a NumPy, dask or zarr array (a zarr array's ``dimension_names`` may say it is
        features × samples), or the path/URL of a dlr dataset, in which case ``y`` is omitted
        and the arrays ``x_name``/``y_name`` of the group are used.
        """
        self._validate_params()
        source = _source(X, y, x_name=x_name, y_name=y_name, storage_options=storage_options)
        if source.y is None:
            raise DlrError("fit needs labels: pass y, or a dataset path holding them")
        started = time.perf_counter()
        engine = Engine(source, cache_size=self.cache_size)
        reporter = ProgressReporter(self.max_iter) if self.verbose else None
        try:
            with single_threaded_blas():
                state = gradient_descent(
                    engine.evaluate,
                    gd_init(source.n_features),
                    learning_rate=self.learning_rate,
                    max_iter=self.max_iter,
                    tol=self.tol,
                    on_iteration=reporter,
                )
        finally:
            if reporter is not None:
                reporter.close()
        self.coef_ = state.w[None, :].copy()
        self.intercept_ = np.array([state.b])
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = source.n_features
        self.n_iter_ = state.iteration
        self.n_passes_ = engine.n_passes
        self.loss_history_ = np.array(state.loss_history)
        self.converged_ = state.converged
        self.cached_bytes_ = engine.cached_bytes
        self.fit_seconds_ = time.perf_counter() - started
        self.data_fingerprint_ = source.fingerprint
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("this LogisticRegression is not fitted yet; call fit first")

    def decision_function(self, X, *, x_name="X", storage_options=None):
        """Logits wᵀx + b, (n_samples,): NumPy for NumPy input, a lazy dask array otherwise."""
        self._check_fitted()
        w, b = self.coef_[0], float(self.intercept_[0])
        if isinstance(X, np.ndarray | list):
            source = from_arrays(X)
            self._check_features(source)
            check = ChunkContext(source.origin, 0, 0, source.n_samples)
            return chunk_logits(np.asarray(X), w, b, samples_first=True, check=check)
        source = _source(X, None, x_name=x_name, y_name=None, storage_options=storage_options)
        self._check_features(source)
        return scoring.logits(source, w, b)

    def _check_features(self, source: Source) -> None:
        if source.n_features != self.n_features_in_:
            raise DlrError(
                f"{source.origin} has {source.n_features} features; the model was fitted on "
                f"{self.n_features_in_}"
            )

    def predict_proba(self, X, **kwargs):
        """(n_samples, 2): P(class 0), P(class 1) for each sample (lazy on dask/zarr input)."""
        p = _map(sigmoid, self.decision_function(X, **kwargs))
        stack = da.stack if isinstance(p, da.Array) else np.stack
        return stack([1 - p, p], axis=1)

    def predict(self, X, **kwargs):
        """Predicted labels from ``classes_`` (lazy on dask/zarr input)."""
        z = self.decision_function(X, **kwargs)
        return _map(lambda v: self.classes_[(v > 0).astype(np.intp)], z)

    def score(self, X, y) -> float:
        """Mean accuracy on (X, y)."""
        pred = self.predict(X)
        accuracy = (pred == (y if isinstance(y, da.Array) else np.asarray(y))).mean()
        return float(accuracy.compute() if isinstance(accuracy, da.Array) else accuracy)

    def save(self, path: str, *, overwrite: bool = True) -> None:
        """Write the fitted model as a directory (JSON + .npy), atomically."""
        self._check_fitted()
        meta = {
            "estimator": "LogisticRegression",
            "params": self.get_params(),
            "classes": self.classes_.tolist(),
            "n_features_in": int(self.n_features_in_),
            "n_iter": int(self.n_iter_),
            "n_passes": int(self.n_passes_),
            "converged": bool(self.converged_),
            "loss_history": [float(v) for v in self.loss_history_],
            "data": self.data_fingerprint_,
        }
        model_io.save_model(
            path, meta, {"coef": self.coef_, "intercept": self.intercept_}, overwrite=overwrite
        )


def load(path: str) -> LogisticRegression:
    """Load a model written by :meth:`LogisticRegression.save` (no code is executed)."""
    meta, arrays = model_io.load_model(path)
    params = meta.get("params", {})
    model = LogisticRegression(
        **{k: v for k, v in params.items() if k in LogisticRegression().get_params()}
    )
    model.coef_ = arrays["coef"]
    model.intercept_ = arrays["intercept"]
    model.classes_ = np.array(meta["classes"])
    model.n_features_in_ = meta["n_features_in"]
    model.n_iter_ = meta["n_iter"]
    model.n_passes_ = meta["n_passes"]
    model.converged_ = meta["converged"]
    model.loss_history_ = np.array(meta["loss_history"], dtype=np.float64)
    model.data_fingerprint_ = meta["data"]
    return model


def _map(f, a):
    return a.map_blocks(f) if isinstance(a, da.Array) else f(a)


def _source(X, y, *, x_name, y_name, storage_options) -> Source:
    if isinstance(X, str) or hasattr(X, "__fspath__"):
        if y is not None:
            raise DlrError("pass either a dataset path, or arrays X and y, not a path and y")
        return from_dataset(
            open_dataset(str(X), x=x_name, y=y_name, storage_options=storage_options)
        )
    if isinstance(X, zarr.Group):
        raise DlrError("pass the dataset's path, or its arrays, rather than a zarr group")
    return from_arrays(X, y)
