"""Faults on a real cluster of separate scheduler and worker processes.

Workers are killed from inside by a worker plugin, at a chosen task, with SIGKILL: the same
thing an out-of-memory killer or a lost machine does.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from distributed import Client
from distributed.diagnostics.plugin import WorkerPlugin

import dlr
from dlr.cluster import local_cluster
from dlr.synthetic import make_dataset

cloudpickle.register_pickle_by_value(sys.modules[__name__])
DLR = str(Path(sys.executable).parent / "dlr")
PARAMS = {"solver": "lbfgs", "C": 0.5, "max_iter": 8, "tol": 0}


class KillOnTask(WorkerPlugin):
    """SIGKILL the worker process when it starts the kernel task of ``chunk`` in pass ``pass_``
    (any pass if None); with a ``marker`` file, only the first time."""

    def __init__(self, chunk: int, pass_: int | None = None, marker: str | None = None):
        self.chunk, self.pass_, self.marker = chunk, pass_, marker

    def transition(self, key, start, finish, *args, **kwargs):
        if finish != "executing" or not isinstance(key, tuple) or len(key) != 2:
            return
        name, chunk = key
        if not (isinstance(name, str) and name.startswith("dlr-part-") and chunk == self.chunk):
            return
        if self.pass_ is not None and not name.endswith(f"-{self.pass_}"):
            return
        if self.marker is not None:
            if os.path.exists(self.marker):
                return
            Path(self.marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("faults") / "data.zarr")
    make_dataset(path, 20_000, 6, chunk_samples=2_500, dtype="float64", seed=9)
    return path


@pytest.mark.parametrize("cache_size", ["auto", 0], ids=["cached-in-workers", "streamed"])
def test_a_worker_killed_mid_iteration_does_not_change_the_weights(data, tmp_path, cache_size):
    expected = dlr.LogisticRegression(**PARAMS).fit(data)
    marker = str(tmp_path / "killed-once")
    with local_cluster(n_workers=2) as cluster, Client(cluster.address) as client:
        client.register_plugin(KillOnTask(chunk=3, pass_=4, marker=marker))
        model = dlr.LogisticRegression(**PARAMS, cache_size=cache_size).fit(data)
    assert os.path.exists(marker), "no worker was killed: the test did not test anything"
    np.testing.assert_array_equal(model.coef_, expected.coef_)
    np.testing.assert_array_equal(model.loss_history_, expected.loss_history_)


def test_a_chunk_that_keeps_killing_workers_is_named(data, monkeypatch):
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES", "1")
    # one task per worker thread at a time: the only task on a worker that dies is the poison
    # one, so no innocent chunk is counted as having killed it
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION", "1.0")
    with local_cluster(n_workers=2) as cluster, Client(cluster.address) as client:
        client.register_plugin(KillOnTask(chunk=5))
        with pytest.raises(dlr.DataError) as info:
            dlr.LogisticRegression(**PARAMS, cache_size=0).fit(data)
    message = str(info.value)
    assert "chunk 5 of" in message and "(samples 12500–14999)" in message
    assert "smaller chunks" in message and "more memory" in message


def test_losing_the_scheduler_says_how_to_resume(data, tmp_path):
    store = tmp_path / "ckpt"
    with local_cluster(n_workers=1) as cluster:
        training = subprocess.Popen(
            [
                DLR,
                "-q",
                "train",
                data,
                "--model",
                str(tmp_path / "model"),
                "--solver",
                "gd",
                "--max-iter",
                "100000",
                "--tol",
                "0",
                "--cache-size",
                "0",
                "--scheduler",
                cluster.address,
                "--checkpoint",
                str(store),
            ],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},
        )
        deadline = time.monotonic() + 60
        while not (store / "LATEST").exists():
            assert training.poll() is None, training.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cluster.processes["scheduler"].kill()
        _, stderr = training.communicate(timeout=60)
    assert training.returncode == 1
    lines = [line for line in stderr.splitlines() if line.startswith("dlr: error:")]
    assert len(lines) == 1, stderr
    assert "lost the connection to the dask scheduler" in lines[0]
    assert "the last checkpoint is iteration" in lines[0] and "--resume" in lines[0]
    assert not (tmp_path / "model").exists()
