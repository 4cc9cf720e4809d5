"""The training run: a solver on an objective, from a start point to a result, checkpointable.

:func:`train` is what :meth:`dlr.LogisticRegression.fit` runs once it has validated its
parameters and built the objective (as scikit-learn's ``fit`` calls ``_logistic_regression_path``);
a pipeline can call it directly. The whole state of a run is one immutable :class:`RunState` —
the solver's state, the histories, early stopping's best point and patience, the passes so
far — advanced by the pure :func:`advance` after each solver step. A checkpoint writes that one
value and a resume reads it back, so a resumed run continues with exactly the bits it had.
"""

import logging
import time
from concurrent.futures import CancelledError
from typing import NamedTuple

import numpy as np

from dlr import serial
from dlr.checkpoint import CheckpointStore, check_compatible
from dlr.errors import DlrError
from dlr.linalg import single_threaded_blas
from dlr.objective import Objective
from dlr.pause import pause_point
from dlr.progress import ProgressReporter
from dlr.solvers import STATES, Progress, Solver, State, progress

log = logging.getLogger("dlr")


class EarlyStopping(NamedTuple):
    """Early stopping on the validation loss, advanced by :func:`track_best`.

    Attributes
    ----------
    best_loss : float
        The lowest validation loss seen at an iterate (inf before the first).
    best_theta : ndarray of shape (p,) or None
        The iterate where it was seen.
    since_best : int
        Iterations since then.
    stopped : bool
        Whether ``since_best`` reached the patience.
    """

    best_loss: float = np.inf
    best_theta: np.ndarray | None = None
    since_best: int = 0
    stopped: bool = False


def track_best(
    early: EarlyStopping, loss: float, theta: np.ndarray, patience: int
) -> EarlyStopping:
    """Early stopping after an iterate ``theta`` (p,) of validation loss ``loss``: stopped once
    ``patience`` iterations in a row did not improve on the best."""
    if loss < early.best_loss:
        return EarlyStopping(loss, theta, 0, False)
    since = early.since_best + 1
    return early._replace(since_best=since, stopped=since >= patience)


class RunState(NamedTuple):
    """The whole state of a training run after ``solver.iteration`` iterations: what a
    checkpoint holds.

    Attributes
    ----------
    solver : GDState, NewtonState or LbfgsState
        The solver's state (its point, evaluation, loss history, ...).
    grad_norm_history : tuple of float, length ``solver.iteration``
        The optimality measure max |∇F| after each iteration.
    validation_history : tuple of float, length ``solver.iteration + 1``
        The validation loss at each iterate, the start included (empty without validation).
    early : EarlyStopping
        The best validation loss and its iterate, and the iterations since.
    passes : int
        Passes over the training data so far, the first (summarizing) pass of each process
        that ran the run included.
    """

    solver: State
    grad_norm_history: tuple[float, ...]
    validation_history: tuple[float, ...]
    early: EarlyStopping
    passes: int


def start_run(solver_state: State, passes: int) -> RunState:
    """The run state at a solver's initial state, after ``passes`` passes."""
    validation = solver_state.ev.validation_loss
    history = () if validation is None else (float(validation),)
    return RunState(solver_state, (), history, EarlyStopping(), passes)


def advance(
    run: RunState, state: State, report: Progress, patience: int | None, passes: int
) -> RunState:
    """The run state after the solver step to ``state`` (reported as ``report``), with
    ``passes`` passes so far; early stopping is tracked when ``patience`` is given."""
    validation, early = run.validation_history, run.early
    if report.validation_loss is not None:
        loss = float(report.validation_loss)
        validation += (loss,)
        if patience is not None:
            early = track_best(early, loss, state.theta, patience)
    return RunState(state, run.grad_norm_history + (report.grad_norm,), validation, early, passes)


def finished(run: RunState, max_iter: int) -> bool:
    s = run.solver
    return s.iteration >= max_iter or s.converged or s.stalled or run.early.stopped


class Checkpointing(NamedTuple):
    """Where and when a run saves its state.

    Attributes
    ----------
    url : str
        The directory or object-store prefix of the run's checkpoints (a
        :class:`dlr.checkpoint.CheckpointStore`).
    params : dict
        The settings that shape the run's iterates (solver and its hyperparameters, penalty,
        ...): a resume with other values is refused, naming the field. :func:`train` adds the
        data's fingerprints and per-chunk content digests.
    every : int or None
        Save every ``every`` iterations;
    seconds : float or None
        and/or when ``seconds`` passed since the last save (every iteration if neither is
        given). The final state and an early stop are always saved.
    keep : int
        Checkpoints kept (the newest).
    storage_options : dict or None
        fsspec options for ``url``.
    """

    url: str
    params: dict
    every: int | None = None
    seconds: float | None = None
    keep: int = 3
    storage_options: dict | None = None


class TrainResult(NamedTuple):
    """The outcome of :func:`train`.

    Attributes
    ----------
    theta : ndarray of shape (p,)
        The result in solver coordinates: the final point, or with early stopping the iterate
        of the lowest validation loss.
    state : GDState, NewtonState or LbfgsState
        The solver's final state.
    n_iter : int
        Iterations run, over all resumes.
    n_passes : int
        Passes over the training data (see :attr:`RunState.passes`).
    loss_history : ndarray of shape (n_iter + 1,)
        F at each iterate, the start included.
    grad_norm_history : ndarray of shape (n_iter,)
        max |∇F| after each iteration.
    validation_loss_history : ndarray of shape (n_iter + 1,) or None
        The validation loss at each iterate; None without validation data.
    converged : bool
        Whether the solver met its tolerance.
    stalled : bool
        Whether its line search found no decrease (F flat to rounding).
    stopped_early : bool
        Whether early stopping ended the run.
    """

    theta: np.ndarray
    state: State
    n_iter: int
    n_passes: int
    loss_history: np.ndarray
    grad_norm_history: np.ndarray
    validation_loss_history: np.ndarray | None
    converged: bool
    stalled: bool
    stopped_early: bool


def train(
    objective: Objective,
    solver: Solver,
    theta0: np.ndarray,
    *,
    theta0_effective: np.ndarray | None = None,
    carried: dict | None = None,
    max_iter: int,
    patience: int | None = None,
    checkpoint: Checkpointing | None = None,
    resume: bool = False,
    verbose: bool = False,
) -> TrainResult:
    """Minimize ``objective`` with ``solver`` from ``theta0``: the training run.

    Parameters
    ----------
    objective : Objective
        F on the training data (first pass done: its engines have summarized their data), with
        the validation data attached if any.
    solver : Solver
        Built from its hyperparameters, e.g. ``SOLVERS["lbfgs"](tol=1e-4, l1=objective.l1,
        memory=10)`` (:data:`dlr.solvers.SOLVERS`).
    theta0 : ndarray of shape (objective.n_params,)
        The start, in solver coordinates (``objective.from_effective`` converts a model's).
    theta0_effective : ndarray of shape (k, n_features + 1) or None
        The original-scale parameters ``theta0`` was converted from (a model's weights):
        F(θ₀) is evaluated at exactly these, from the first pass's sums when the engines were
        built to make them there (``Engine(first=...)``), else by one pass.
    carried : dict or None
        What ``solver.init`` carries over from an earlier fit besides θ₀ — L-BFGS's correction
        pairs ``s``, ``y`` in this run's solver coordinates (:func:`dlr.warm.carried_memory`).
        Part of the solver's state from the start, so a checkpoint holds it.
    max_iter : int
        Stop after this many iterations (counted over all resumes), or earlier when the solver
        converged or stalled.
    patience : int or None
        Early stopping: stop when the validation loss has not improved for ``patience``
        iterations, and return the best iterate. Needs validation data; None: off.
    checkpoint : Checkpointing or None
        Save the :class:`RunState` to ``checkpoint.url`` as it says.
    resume : bool
        Continue from the newest intact checkpoint at ``checkpoint.url`` (after checking it
        was written by a run of the same settings on the same data, chunk by chunk) instead of
        ``theta0``; start from ``theta0`` if there is none yet. Bit-identical to a run that was
        never interrupted.
    verbose : bool
        Report progress after each iteration (:class:`dlr.progress.ProgressReporter`).

    Returns
    -------
    TrainResult

    Raises
    ------
    DlrError
        When a resume does not match the checkpoint, or the connection to a distributed
        scheduler is lost (the message says how to resume); errors of the data propagate.
    """
    if resume and checkpoint is None:
        raise DlrError("resume needs the checkpoint directory to resume from")
    if patience is not None and objective.validation is None:
        raise DlrError("early_stopping needs validation_data")
    engine = objective.engine
    meta = _meta(objective, checkpoint.params, theta0, carried) if checkpoint else None
    saver = _Saver(checkpoint, meta) if checkpoint else None
    run = saver.resume() if resume else None
    offset = 0 if run is None else run.passes  # passes made by the processes before this one
    reporter = ProgressReporter(max_iter) if verbose else None
    try:
        with single_threaded_blas():
            if run is None:
                ev = None
                if theta0_effective is not None:
                    ev = objective(theta0, solver.hessian, theta_eff=theta0_effective)
                state = solver.init(objective, theta0, ev, **(carried or {}))
                run = start_run(state, engine.n_passes)
            while not finished(run, max_iter):
                started = time.perf_counter()
                state = solver.step(objective, run.solver)
                report = progress(solver, state, started)
                if reporter is not None:
                    reporter(report)
                run = advance(run, state, report, patience, offset + engine.n_passes)
                if saver is not None and (run.early.stopped or saver.due(state.iteration)):
                    saver.save(run)
    except (OSError, TimeoutError, CancelledError) as e:
        if engine.client is None:
            raise
        raise DlrError(_lost_scheduler_message(engine, saver, e)) from None
    except KeyboardInterrupt as e:
        e.dlr_resume = saver.resume_hint() if saver is not None else None  # for the CLI's line
        if e.dlr_resume:
            e.add_note(e.dlr_resume)
        raise
    finally:
        if reporter is not None:
            reporter.close()
    run = run._replace(passes=offset + engine.n_passes)
    if saver is not None and saver.last_iteration != run.solver.iteration:
        saver.save(run)
    state = run.solver
    best = run.early.best_theta
    return TrainResult(
        theta=best if best is not None else state.theta,
        state=state,
        n_iter=state.iteration,
        n_passes=run.passes,
        loss_history=np.array(state.loss_history),
        grad_norm_history=np.array(run.grad_norm_history),
        validation_loss_history=(
            np.array(run.validation_history) if objective.validation is not None else None
        ),
        converged=bool(state.converged),
        stalled=bool(state.stalled),
        stopped_early=run.early.stopped,
    )


def _meta(objective: Objective, params: dict, theta0: np.ndarray, carried: dict | None) -> dict:
    """What a checkpoint says about its run: settings, data fingerprints, chunk digests, and
    the start (a digest of θ₀ and of what the solver carries over from an earlier fit)."""
    meta = {
        "params": params,
        "data": objective.engine.source.fingerprint,
        "validation": None,
        "start": {"digest": _start_digest(theta0, carried)},
    }
    content = {"data": _content(objective.engine)}
    if objective.validation is not None:
        meta["validation"] = objective.validation.source.fingerprint
        content["validation"] = _content(objective.validation)
    return {**meta, "content": content}


def _start_digest(theta0: np.ndarray, carried: dict | None) -> str:
    """sha256 of θ₀ and the carried arrays (by name), as float64: the same start, the same
    digest."""
    parts = [np.ascontiguousarray(theta0, dtype="<f8").tobytes()]
    for name, value in sorted((carried or {}).items()):
        parts += [name.encode(), np.ascontiguousarray(value, dtype="<f8").tobytes()]
    return serial.sha256(b"".join(parts))


def _content(engine) -> dict:
    src = engine.source
    chunks = [[*src.bounds[i], d] for i, d in enumerate(engine.chunk_digests())]
    return {"origin": src.origin, "chunks": chunks}


class _Saver:
    """When and where a run's checkpoints go; remembers the last one written or read."""

    def __init__(self, checkpoint: Checkpointing, meta: dict):
        self.store = CheckpointStore(
            checkpoint.url,
            keep=checkpoint.keep,
            storage_options=checkpoint.storage_options,
            types=(RunState, EarlyStopping, *STATES),
        )
        self.meta = meta
        self.every = checkpoint.every if checkpoint.every or checkpoint.seconds else 1
        self.seconds = checkpoint.seconds
        self.last_saved = time.monotonic()
        self.last_name, self.last_iteration = None, None

    def due(self, iteration: int) -> bool:
        if self.every and iteration % self.every == 0:
            return True
        return bool(self.seconds) and time.monotonic() - self.last_saved >= self.seconds

    def save(self, run: RunState) -> None:
        iteration = run.solver.iteration
        self.last_name = self.store.save(iteration, self.meta, run)
        self.last_iteration = iteration
        self.last_saved = time.monotonic()
        pause_point("checkpoint")

    def resume_hint(self) -> str | None:
        """Where a stopped run can continue from, in words; None without a checkpoint."""
        if self.last_name is None:
            return None
        return (
            f"the last checkpoint is iteration {self.last_iteration} "
            f"('{self.store.url}/{self.last_name}'): run the same command again with --resume "
            "(resume=True) to continue from it"
        )

    def resume(self) -> RunState | None:
        """The newest checkpoint's run state, after checking it belongs to this run."""
        found = self.store.load_latest()
        if found is None:
            log.info("no checkpoint in %s yet: starting from the beginning", self.store.url)
            return None
        where = f"checkpoint '{self.store.url}/{found.name}'"
        check_compatible(found.meta, self.meta, where)
        if not isinstance(found.state, RunState):
            raise DlrError(f"cannot resume from {where}: it holds no training run state")
        self.last_name, self.last_iteration = found.name, found.iteration
        log.info(
            "resuming from checkpoint %s/%s (iteration %d)",
            self.store.url,
            found.name,
            found.iteration,
        )
        return found.state


def _lost_scheduler_message(engine, saver: _Saver | None, error) -> str:
    address = getattr(engine.client.scheduler, "address", "?")
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
    text = f"lost the connection to the dask scheduler at {address} ({reason})"
    if saver is not None and saver.last_name is not None:
        return f"{text}; {saver.resume_hint()}"
    if saver is not None:
        return f"{text}; no checkpoint was written yet: run the same command again"
    return f"{text}; train with --checkpoint DIR (checkpoint=...) to be able to resume"
