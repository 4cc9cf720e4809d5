"""The training run on its own: objective and start in, result out; its state is one value."""

import numpy as np
import pytest

from dlr.checkpoint import CheckpointStore
from dlr.engine import Engine
from dlr.errors import DlrError
from dlr.objective import Objective
from dlr.solvers import SOLVERS, STATES
from dlr.sources import from_arrays
from dlr.training import (
    Checkpointing,
    EarlyStopping,
    RunState,
    TrainResult,
    track_best,
    train,
)


def objective(seed=0, validation=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((400, 3))
    y = (X @ [1.0, -2.0, 0.5] + rng.standard_normal(400) > 0).astype(int)
    engine = Engine(from_arrays(X[:300], y[:300]))
    valid = Engine(from_arrays(X[300:], y[300:])) if validation else None
    return Objective(
        engine,
        engine.summarize(),
        C=0.5,
        validation=valid,
        validation_summary=valid.summarize() if valid else None,
    )


@pytest.mark.parametrize("solver", ["gd", "lbfgs", "newton"])
def test_a_run_checkpointed_and_resumed_equals_the_uninterrupted_one(tmp_path, solver):
    options = {"gd": {"learning_rate": 1.0}, "lbfgs": {"memory": 3}, "newton": {}}[solver]
    build = SOLVERS[solver](tol=0, **options)
    f = objective(validation=True)
    full = train(f, build, np.zeros(f.n_params), max_iter=6)
    saving = Checkpointing(str(tmp_path / "ckpt"), {"solver": solver}, every=2)
    train(objective(validation=True), build, np.zeros(f.n_params), max_iter=3, checkpoint=saving)
    found = CheckpointStore(saving.url, types=(RunState, EarlyStopping, *STATES)).load_latest()
    assert isinstance(found.state, RunState) and found.iteration == 3  # the final state, too
    g = objective(validation=True)
    resumed = train(g, build, np.zeros(g.n_params), max_iter=6, checkpoint=saving, resume=True)
    assert isinstance(resumed, TrainResult)
    assert resumed.n_iter == 6 and resumed.grad_norm_history.shape == (6,)
    assert resumed.validation_loss_history.shape == resumed.loss_history.shape == (7,)
    for a, b in zip(resumed, full, strict=True):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(resumed.state.theta, full.state.theta)
    assert resumed.n_passes == full.n_passes + 1  # the resumed process's own first pass


def test_the_validation_history_starts_at_the_start_point():
    f = objective(validation=True)
    result = train(f, SOLVERS["gd"](learning_rate=1.0, tol=0), np.zeros(f.n_params), max_iter=2)
    assert result.validation_loss_history[0] == f(np.zeros(f.n_params)).validation_loss


def test_early_stopping_is_advanced_by_a_pure_function():
    theta = [np.full(2, float(i)) for i in range(4)]
    start = EarlyStopping()
    early = start
    for i, loss in enumerate([3.0, 2.0, 2.5, 2.0]):
        early = track_best(early, loss, theta[i], patience=2)
        assert early.stopped == (i == 3)
    assert start == EarlyStopping()  # nothing was changed in place
    assert early.best_loss == 2.0 and early.best_theta is theta[1] and early.since_best == 2


def test_early_stopping_needs_validation_data():
    f = objective()
    with pytest.raises(DlrError, match="early_stopping needs validation_data"):
        train(f, SOLVERS["newton"](tol=0), np.zeros(f.n_params), max_iter=3, patience=2)
