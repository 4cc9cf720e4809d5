"""Checkpoints hold the complete solver state; resuming gives the uninterrupted run's bits."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import dlr
from dlr import serial
from dlr.checkpoint import CheckpointStore, CheckpointWarning
from dlr.solvers import STATES, Evaluation
from dlr.solvers.gd import GDState
from dlr.solvers.lbfgs import LbfgsState
from dlr.solvers.newton import NewtonState
from dlr.synthetic import make_dataset

DLR = str(Path(sys.executable).parent / "dlr")
SOLVERS = {
    "gd": {"solver": "gd", "nesterov": True, "learning_rate": 2.0},
    "newton": {"solver": "newton", "C": 0.5, "l1_ratio": 0.3},
    "lbfgs": {"solver": "lbfgs", "standardize": True},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    path = str(root / "data.zarr")
    make_dataset(path, 3000, 8, chunk_samples=700, dtype="float64", seed=3)
    valid = str(root / "valid.zarr")
    make_dataset(valid, 900, 8, chunk_samples=700, dtype="float64", seed=4)
    return path, valid


def test_every_solver_state_round_trips_bit_for_bit():
    rng = np.random.default_rng(0)
    ev = Evaluation(0.1 + 1e-17, rng.standard_normal(4), rng.standard_normal((4, 4)), None)
    states = [
        GDState(
            3,
            rng.standard_normal(4),
            ev,
            (float(np.log(2)), 0.5, np.inf),
            False,
            0.25,
            rng.standard_normal(4),
            1.618,
        ),
        NewtonState(2, rng.standard_normal(4), ev, (1.0, np.nan), True, stalled=True),
        LbfgsState(
            5,
            rng.standard_normal(4),
            ev._replace(hess=None, validation_loss=0.3),
            (1.0, 0.9),
            False,
            False,
            tuple(rng.standard_normal((3, 4))),
            tuple(rng.standard_normal((3, 4))),
        ),
    ]
    for state in states:
        arrays = {}
        types = {cls.__name__: cls for cls in STATES}
        doc = json.loads(json.dumps(serial.encode(state, arrays, "state", types)))
        back = serial.decode(doc, arrays, types)
        assert type(back) is type(state)
        assert repr(back) == repr(state)  # every float, array and nested tuple, bit for bit


@pytest.mark.parametrize("solver", SOLVERS)
def test_resuming_gives_the_bits_of_an_uninterrupted_fit(data, tmp_path, solver):
    path, valid = data
    params = {"tol": 0, "max_iter": 12, **SOLVERS[solver]}
    full = dlr.LogisticRegression(**params).fit(path, validation_data=valid)
    store = str(tmp_path / "ckpt")
    dlr.LogisticRegression(**{**params, "max_iter": 5}).fit(
        path, validation_data=valid, checkpoint=store, checkpoint_every=2
    )
    resumed = dlr.LogisticRegression(**params).fit(
        path, validation_data=valid, checkpoint=store, resume=True
    )
    np.testing.assert_array_equal(resumed.coef_, full.coef_)
    np.testing.assert_array_equal(resumed.intercept_, full.intercept_)
    np.testing.assert_array_equal(resumed.loss_history_, full.loss_history_)
    np.testing.assert_array_equal(resumed.validation_loss_history_, full.validation_loss_history_)
    np.testing.assert_array_equal(resumed.grad_norm_history_, full.grad_norm_history_)


def test_early_stopping_state_survives_a_resume(data, tmp_path):
    path, valid = data
    params = {
        "solver": "gd",
        "C": np.inf,
        "learning_rate": 40.0,
        "tol": 0,
        "max_iter": 100,
        "early_stopping": True,
        "n_iter_no_change": 4,
    }
    full = dlr.LogisticRegression(**params).fit(path, validation_data=valid)
    store = str(tmp_path / "ckpt")
    stop_at = (
        int(full.n_iter_[0]) - 2
    )  # inside the patience window: the best weights must be restored
    dlr.LogisticRegression(**{**params, "max_iter": stop_at}).fit(
        path, validation_data=valid, checkpoint=store
    )
    resumed = dlr.LogisticRegression(**params).fit(
        path, validation_data=valid, checkpoint=store, resume=True
    )
    assert resumed.n_iter_ == full.n_iter_
    np.testing.assert_array_equal(resumed.coef_, full.coef_)


def test_only_the_last_checkpoints_are_kept_and_latest_points_to_the_newest(data, tmp_path):
    path, _ = data
    store = tmp_path / "ckpt"
    dlr.LogisticRegression(solver="gd", tol=0, max_iter=9).fit(
        path, checkpoint=str(store), keep_checkpoints=2
    )
    names = sorted(p.name for p in store.iterdir() if p.name != "LATEST")
    assert [n[:13] for n in names] == ["ckpt-00000008", "ckpt-00000009"]
    assert json.loads((store / "LATEST").read_text())["checkpoint"] == names[1]


def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning_naming_it(data, tmp_path):
    path, _ = data
    params = {"solver": "lbfgs", "tol": 0, "max_iter": 10}
    full = dlr.LogisticRegression(**params).fit(path)
    store = tmp_path / "ckpt"
    dlr.LogisticRegression(**{**params, "max_iter": 6}).fit(path, checkpoint=str(store))
    newest = sorted(p for p in store.iterdir() if p.name.startswith("ckpt-"))[-1]
    victim = next(newest.glob("*.theta.npy"))
    victim.write_bytes(victim.read_bytes()[:-5])  # truncated, as by a crash or a bad disk
    with pytest.warns(CheckpointWarning, match=rf"{newest.name}' is damaged .*theta.npy"):
        resumed = dlr.LogisticRegression(**params).fit(path, checkpoint=str(store), resume=True)
    np.testing.assert_array_equal(resumed.coef_, full.coef_)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"C": 3.0}, "params.C"),
        ({"standardize": True}, "params.standardize"),
        ({"solver": "gd"}, "params.solver"),
    ],
)
def test_resuming_with_other_settings_is_refused_naming_the_field(data, tmp_path, change, field):
    path, _ = data
    store = str(tmp_path / "ckpt")
    dlr.LogisticRegression(solver="lbfgs", tol=0, max_iter=3).fit(path, checkpoint=store)
    with pytest.raises(dlr.DlrError, match=rf"cannot resume from checkpoint .*: {field} was"):
        dlr.LogisticRegression(**{"solver": "lbfgs", "tol": 0, "max_iter": 6, **change}).fit(
            path, checkpoint=store, resume=True
        )


def test_resuming_on_other_data_is_refused_naming_the_field(data, tmp_path):
    path, _ = data
    other = str(tmp_path / "other.zarr")
    make_dataset(other, 2000, 8, chunk_samples=700, dtype="float64", seed=3)
    store = str(tmp_path / "ckpt")
    dlr.LogisticRegression(tol=0, max_iter=2).fit(path, checkpoint=store)
    with pytest.raises(dlr.DlrError, match=r"data\.shape was \[3000, 8\] there and is \[2000, 8\]"):
        dlr.LogisticRegression(tol=0, max_iter=4).fit(other, checkpoint=store, resume=True)


def test_resuming_on_other_values_of_the_same_shape_is_refused_naming_the_chunk(tmp_path):
    import zarr

    path = str(tmp_path / "data.zarr")
    make_dataset(path, 3000, 8, chunk_samples=700, dtype="float64", seed=3)
    store = str(tmp_path / "ckpt")
    dlr.LogisticRegression(tol=0, max_iter=2).fit(path, checkpoint=store)
    X = zarr.open_group(path, mode="r+")["X"]
    X[1500, 3] += 1.0  # one value of chunk 2 (samples 1400–2099)
    with pytest.raises(dlr.DlrError, match=r"chunk 2 of '.*data\.zarr' \(samples 1400–2099\)"):
        dlr.LogisticRegression(tol=0, max_iter=4).fit(path, checkpoint=store, resume=True)


def test_resuming_on_other_in_memory_values_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 3)), rng.integers(0, 2, 200)
    store = str(tmp_path / "ckpt")
    dlr.LogisticRegression(tol=0, max_iter=2).fit(X, y, checkpoint=store)
    swapped = X[::-1].copy()  # the same values in another order: the same sums, other data
    with pytest.raises(dlr.DlrError, match=r"chunk 0 of the input array \(samples 0–199\)"):
        dlr.LogisticRegression(tol=0, max_iter=4).fit(swapped, y, checkpoint=store, resume=True)
    resumed = dlr.LogisticRegression(tol=0, max_iter=4).fit(X, y, checkpoint=store, resume=True)
    assert resumed.n_iter_ == 4


def test_the_cli_refuses_to_resume_on_regenerated_data(tmp_path):
    from click.testing import CliRunner

    from dlr.cli import main

    data, store = str(tmp_path / "data.zarr"), str(tmp_path / "ckpt")
    make = ["make-data", data, "--samples", "2000", "--features", "4", "--chunk-samples", "500"]
    train = ["train", data, "--model", str(tmp_path / "m"), "--checkpoint", store]
    train += ["--solver", "gd", "--max-iter", "3", "--tol", "0", "--overwrite"]
    for args in ([*make, "--seed", "1"], train, [*make, "--seed", "2", "--overwrite"]):
        assert CliRunner().invoke(main, args).exit_code == 0
    resumed = CliRunner().invoke(main, [*train, "--resume"])
    assert resumed.exit_code == 1
    lines = resumed.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlr: error: cannot resume from checkpoint")
    assert "chunk 0 of" in lines[0] and "(samples 0–499)" in lines[0]


def test_resume_without_a_checkpoint_yet_starts_from_the_beginning(data, tmp_path):
    path, _ = data
    fresh = dlr.LogisticRegression(tol=0, max_iter=3).fit(path)
    resumed = dlr.LogisticRegression(tol=0, max_iter=3).fit(
        path, checkpoint=str(tmp_path / "none-yet"), resume=True
    )
    np.testing.assert_array_equal(resumed.coef_, fresh.coef_)


def test_checkpoints_on_object_storage_use_fresh_keys_and_a_pointer(data):
    import fsspec

    path, _ = data
    url = "memory://dlr-ckpt-test/run"
    try:
        params = {"solver": "newton", "tol": 0, "max_iter": 4}
        full = dlr.LogisticRegression(**params).fit(path)
        dlr.LogisticRegression(**{**params, "max_iter": 2}).fit(path, checkpoint=url)
        store = CheckpointStore(url)
        assert len(store.names()) == 2
        resumed = dlr.LogisticRegression(**params).fit(path, checkpoint=url, resume=True)
        np.testing.assert_array_equal(resumed.coef_, full.coef_)
    finally:
        fsspec.filesystem("memory").rm("/dlr-ckpt-test", recursive=True)


def test_the_cli_killed_after_a_checkpoint_resumes_to_identical_weights(tmp_path):
    data = str(tmp_path / "big.zarr")
    make_dataset(data, 200_000, 16, chunk_samples=20_000, dtype="float64", seed=7)
    args = [
        "-q",
        "train",
        data,
        "--solver",
        "gd",
        "--C",
        "inf",
        "--learning-rate",
        "1.0",
        "--max-iter",
        "60",
        "--tol",
        "0",
        "--cache-size",
        "0",
    ]
    subprocess.run([DLR, *args, "--model", str(tmp_path / "full")], check=True)
    store = tmp_path / "ckpt"
    killed = subprocess.Popen(
        [
            DLR,
            *args,
            "--model",
            str(tmp_path / "m"),
            "--checkpoint",
            str(store),
            "--checkpoint-every",
            "5",
        ]
    )
    deadline = time.monotonic() + 120
    while (
        not (store / "LATEST").exists()
        or "ckpt-00000010" > json.loads((store / "LATEST").read_text())["checkpoint"]
    ):
        assert killed.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "m").exists()
    subprocess.run(
        [DLR, *args, "--model", str(tmp_path / "m"), "--checkpoint", str(store), "--resume"],
        check=True,
    )
    full, resumed = dlr.load(str(tmp_path / "full")), dlr.load(str(tmp_path / "m"))
    np.testing.assert_array_equal(resumed.coef_, full.coef_)
    np.testing.assert_array_equal(resumed.loss_history_, full.loss_history_)


#: ``dlr`` in a process that SIGKILLs itself when the objective is evaluated for the N-th time
#: (argv[1]): dead mid-pass, as by the out-of-memory killer, with no chance to clean up.
KILLED_MID_PASS = """
import os, signal, sys
from dlr.cli import main
from dlr.objective import Objective

kill_at, calls, evaluate = int(sys.argv[1]), [0], Objective.__call__

def dying(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return evaluate(self, *args, **kwargs)

Objective.__call__ = dying
main(sys.argv[2:])
"""


@pytest.mark.parametrize(("solver", "max_iter", "kill_at"), [("lbfgs", 10, 6), ("newton", 5, 4)])
def test_the_cli_sigkilled_mid_pass_resumes_to_identical_weights(
    data, tmp_path, solver, max_iter, kill_at
):
    path, _ = data
    args = ["-q", "train", path, "--solver", solver, "--C", "0.5", "--tol", "0"]
    args += ["--max-iter", str(max_iter), "--cache-size", "0"]
    full = dlr.LogisticRegression(solver=solver, C=0.5, tol=0, max_iter=max_iter).fit(path)
    store, model = tmp_path / "ckpt", str(tmp_path / "m")
    resumable = [*args, "--model", model, "--checkpoint", str(store)]
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MID_PASS, str(kill_at), *resumable], timeout=300
    )
    assert killed.returncode == -signal.SIGKILL
    assert not os.path.exists(model)
    saved = json.loads((store / "LATEST").read_text())["checkpoint"]
    assert 1 <= int(saved[5:13]) < max_iter
    subprocess.run([DLR, *resumable, "--resume"], check=True, timeout=300)
    resumed = dlr.load(model)
    np.testing.assert_array_equal(resumed.coef_, full.coef_)
    np.testing.assert_array_equal(resumed.intercept_, full.intercept_)
    np.testing.assert_array_equal(resumed.loss_history_, full.loss_history_)
