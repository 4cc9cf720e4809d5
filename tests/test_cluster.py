"""Real clusters: separate ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1.

Training on them gives the threaded scheduler's bits, through the Python API and the CLI
(``--scheduler``, ``--scheduler-file``, ``DASK_SCHEDULER_ADDRESS``); ``dlr cluster`` listens on
the loopback interface only and leaves no process behind; a TLS cluster refuses plain TCP; a
worker that cannot see the data is named before training starts; an unreachable scheduler is a
one-line error.
"""

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dask
import numpy as np
import psutil
import pytest
import zarr
from click.testing import CliRunner
from distributed import Client, get_task_stream
from distributed.security import Security

import dlr
from dlr.cli import main
from dlr.cluster import local_cluster
from dlr.errors import DataError
from dlr.preflight import check_workers
from dlr.synthetic import make_dataset

DLR_SCRIPT = str(Path(sys.executable).parent / "dlr")
PARAMS = {"learning_rate": 1.0, "max_iter": 8, "tol": 0}
TRAIN_ARGS = ["--learning-rate", "1.0", "--max-iter", "8", "--tol", "0"]
SHORT_TRAIN_ARGS = ["--learning-rate", "1.0", "--max-iter", "2", "--tol", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("cluster-data") / "data.zarr"
    make_dataset(str(path), 2400, 6, chunk_samples=300, dtype="float32", seed=11)
    return str(path)


@pytest.fixture(scope="module")
def threaded(data):
    """coef_ and intercept_ from the local threaded scheduler: the reference bits."""
    with dask.config.set(scheduler="threads"):
        model = dlr.LogisticRegression(**PARAMS).fit(data)
    return model.coef_, model.intercept_


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(n_workers=2) as running:
        yield running


def assert_same_bits(model, threaded):
    np.testing.assert_array_equal(model.coef_, threaded[0])
    np.testing.assert_array_equal(model.intercept_, threaded[1])


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fit_on_separate_scheduler_and_worker_processes_matches_threads(cluster, data, threaded):
    with Client(cluster.address) as client:
        workers = set(client.scheduler_info(n_workers=-1)["workers"])
        for cache_size in ("auto", 0):
            with get_task_stream(client) as stream:
                model = dlr.LogisticRegression(cache_size=cache_size, **PARAMS).fit(data)
            assert_same_bits(model, threaded)
            used = {task["worker"] for task in stream.data}
            assert used == workers  # 8 chunks: both worker processes computed
        worker_pids = set(client.run(os.getpid).values())
    assert len(workers) == 2
    assert all(w.startswith("tcp://127.0.0.1:") for w in workers)
    # the workers are processes of their own, started by the cluster's `dask worker` commands
    started = [
        psutil.Process(p.pid) for name, p in cluster.processes.items() if name != "scheduler"
    ]
    assert len(worker_pids) == 2
    assert worker_pids <= {child.pid for p in started for child in p.children(recursive=True)}


def test_the_cli_trains_on_a_cluster_by_address_scheduler_file_and_environment(
    cluster, data, threaded, tmp_path, monkeypatch
):
    ways = {
        "address": ["--scheduler", cluster.address],
        "file": ["--scheduler-file", cluster.scheduler_file],
        "environment": [],
    }
    for name, how in ways.items():
        if name == "environment":
            monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.address)
        model = tmp_path / name
        result = invoke("-q", "train", data, "--model", model, *TRAIN_ARGS, *how)
        assert result.exit_code == 0, result.output
        assert_same_bits(dlr.load(str(model)), threaded)


def test_predict_and_evaluate_run_on_the_cluster(cluster, data, tmp_path):
    model = tmp_path / "model"
    assert invoke("-q", "train", data, "--model", model, *TRAIN_ARGS).exit_code == 0
    local = invoke("evaluate", model, data, "--json")
    remote = invoke("evaluate", model, data, "--json", "--scheduler-file", cluster.scheduler_file)
    assert remote.exit_code == 0, remote.output
    assert remote.stdout == local.stdout
    out = tmp_path / "p.zarr"
    result = invoke("predict", model, data, "--out", out, "--scheduler", cluster.address)
    assert result.exit_code == 0, result.output
    assert (out / "zarr.json").exists()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_dlr_cluster_listens_on_loopback_only_and_stops_every_process(stop, tmp_path):
    scheduler_file = tmp_path / "scheduler.json"
    proc = subprocess.Popen(
        [DLR_SCRIPT, "cluster", "--workers", "2", "--port", "0"]
        + ["--scheduler-file", str(scheduler_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = [proc.stdout.readline() for _ in range(5)]
        if not banner[-1]:
            pytest.fail(f"dlr cluster did not start: {proc.communicate(timeout=30)[1]}")
        assert banner[0].startswith("dask scheduler at tcp://127.0.0.1:")
        assert str(scheduler_file) in banner[2] and "--scheduler-file" in banner[2]
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        assert len(family) >= 1 + 1 + 2 * 2  # dlr, scheduler, a nanny and a worker per worker
        listening = [
            conn.laddr
            for p in family
            for conn in p.net_connections("inet")
            if conn.status == psutil.CONN_LISTEN
        ]
        assert len(listening) >= 1 + 2 * 2
        assert {addr.ip for addr in listening} == {"127.0.0.1"}, listening
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"cluster stopped ({stop.name})" in out
    _, alive = psutil.wait_procs(family[1:], timeout=5)
    assert alive == []
    assert not scheduler_file.exists()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed CA certificate and key (the certificate is its own CA), as PEM files."""
    root = tmp_path_factory.mktemp("tls")
    return write_self_signed(root, "dlr-test"), write_self_signed(root, "someone-else")


def write_self_signed(root: Path, name: str) -> tuple[str, str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = root / f"{name}.pem", root / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(cert_path), str(key_path)


def test_a_tls_cluster_refuses_plain_tcp_and_trains_with_the_right_certificates(
    tls_files, data, threaded, tmp_path
):
    (ca, cert, key), (other_ca, other_cert, other_key) = tls_files
    with local_cluster(n_workers=1, tls=(ca, cert, key)) as running:
        address = running.address
        assert address.startswith("tls://127.0.0.1:")
        plain = address.replace("tls://", "tcp://")
        with pytest.raises(OSError):
            Client(plain, timeout=5, set_as_default=False)
        stranger = Security(
            tls_ca_file=other_ca,
            tls_client_cert=other_cert,
            tls_client_key=other_key,
            require_encryption=True,
        )
        with pytest.raises(OSError):
            Client(address, security=stranger, timeout=5, set_as_default=False)

        model = tmp_path / "model"
        refused = invoke("train", data, "--model", model, "--scheduler", plain)
        assert refused.exit_code == 1
        assert refused.stderr.startswith(
            f"dlr: error: cannot connect to the dask scheduler at {plain}"
        )
        no_tls = invoke("train", data, "--model", model, "--scheduler", address)
        assert no_tls.exit_code == 1 and "uses TLS: pass --tls-ca-file" in no_tls.stderr
        tls = ["--tls-ca-file", ca, "--tls-cert", cert, "--tls-key", key]
        result = invoke(
            "-q", "train", data, "--model", model, "--scheduler", address, *TRAIN_ARGS, *tls
        )
        assert result.exit_code == 0, result.output
        assert_same_bits(dlr.load(str(model)), threaded)


def test_workers_that_cannot_open_the_data_are_named_before_training(tmp_path, monkeypatch):
    client_dir, worker_dir = tmp_path / "client", tmp_path / "workers"
    client_dir.mkdir()
    worker_dir.mkdir()
    make_dataset(str(client_dir / "data.zarr"), 300, 3, chunk_samples=100, seed=1)
    # the same relative name on the workers' side holds different data
    make_dataset(str(client_dir / "other.zarr"), 300, 3, chunk_samples=100, seed=1)
    make_dataset(str(worker_dir / "other.zarr"), 200, 3, chunk_samples=100, seed=1)
    monkeypatch.chdir(client_dir)
    with local_cluster(n_workers=1, cwd=str(worker_dir)) as running:
        with Client(running.address, set_as_default=False) as client:
            (worker,) = client.scheduler_info(n_workers=-1)["workers"]
            with pytest.raises(DataError, match="no such path on the worker"):
                check_workers(client, "data.zarr")
            check_workers(client, str(client_dir / "data.zarr"))  # absolute: same machine

        result = invoke("train", "data.zarr", "--model", "m", "--scheduler", running.address)
        assert result.exit_code == 1
        assert result.stderr == (
            f"dlr: error: worker {worker} cannot open 'data.zarr': no such path on the worker "
            "(a relative path is resolved in each worker's working directory); put the data on "
            "shared storage mounted at the same path, or object storage\n"
        )
        result = invoke("train", "other.zarr", "--model", "m", "--scheduler", running.address)
        assert result.exit_code == 1
        assert f"worker {worker} cannot open 'other.zarr'" in result.stderr
        assert "shapes, chunks or dtypes differ from what this machine sees" in result.stderr
        assert not (client_dir / "m").exists()

        absolute = str(client_dir / "data.zarr")
        result = invoke("-q", "train", absolute, "--model", "m", "--scheduler", running.address)
        assert result.exit_code == 0, result.output


def test_an_unreachable_scheduler_is_a_one_line_error_within_seconds(data, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}
    started = time.monotonic()
    proc = subprocess.run(
        [DLR_SCRIPT, "train", data, "--model", str(tmp_path / "m"), "--scheduler", address],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"dlr: error: cannot connect to the dask scheduler at {address}")
    assert elapsed < 20
    assert not (tmp_path / "m").exists()


def test_scheduler_options_are_checked_before_anything_runs(data, tmp_path, monkeypatch):
    model = tmp_path / "m"
    cases = {
        ("--scheduler-file", tmp_path / "missing.json"): "scheduler file",
        ("--scheduler", "tcp://127.0.0.1:1", "--workers", "2"): "give only one of",
        ("--tls-cert", tmp_path / "cert.pem"): "TLS needs --tls-ca-file and --tls-cert",
        ("--tls-ca-file", tmp_path / "ca.pem", "--tls-cert", tmp_path / "cert.pem"): "does not",
    }
    for args, message in cases.items():
        result = invoke("train", data, "--model", model, *args)
        assert result.exit_code == 1 and message in result.stderr, (args, result.output)
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", f"tcp://127.0.0.1:{free_port()}")
        result = invoke("train", data, "--model", model)
    assert result.exit_code == 1 and "cannot connect to the dask scheduler" in result.stderr
    assert not model.exists()


def test_training_waits_for_the_first_worker_of_an_empty_cluster(data, tmp_path, monkeypatch):
    """A scheduler with no worker yet: ``dlr train`` waits (up to 60 s; here first 1 s, in
    vain, then the full wait) and runs on the worker that joins after it has connected."""
    scheduler_file, model = tmp_path / "scheduler.json", tmp_path / "m"
    quiet = ["--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    started = []

    def start(*argv):
        with open(tmp_path / f"process-{len(started)}.log", "wb") as log:
            started.append(subprocess.Popen([str(a) for a in argv], stdout=log, stderr=log))
        return started[-1]

    try:
        start(
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--scheduler-file",
            str(scheduler_file),
            *quiet,
        )
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        with monkeypatch.context() as patch:
            patch.setattr("dlr.preflight.WORKER_WAIT_SECONDS", 1)
            alone = invoke("train", data, "--model", model, "--scheduler-file", scheduler_file)
        assert alone.exit_code == 1 and not model.exists()
        assert "dlr: error: no dask worker joined the scheduler at tcp://127.0.0.1:" in alone.stderr
        assert "within 1 s" in alone.stderr
        training = start(
            DLR_SCRIPT,
            "-q",
            "train",
            data,
            "--model",
            str(model),
            *SHORT_TRAIN_ARGS,
            "--scheduler-file",
            str(scheduler_file),
        )
        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address) as observer:

            def clients(dask_scheduler):
                return len(dask_scheduler.clients)

            alone = observer.run_on_scheduler(clients)
            while observer.run_on_scheduler(clients) == alone:  # until dlr has connected
                assert training.poll() is None, (tmp_path / "process-1.log").read_text()
                assert time.monotonic() < deadline + 60, "dlr never connected"
                time.sleep(0.1)
            # dlr is connected to a scheduler without workers: without the wait it would fail
            # now; the worker below needs seconds to start
            assert not observer.scheduler_info()["workers"]
        start(
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            address,
            "--host",
            "127.0.0.1",
            "--nthreads",
            "1",
            *quiet,
        )
        assert training.wait(timeout=300) == 0, (tmp_path / "process-1.log").read_text()
    finally:
        for process in reversed(started):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    expected = dlr.LogisticRegression(**{**PARAMS, "max_iter": 2}).fit(data)
    assert_same_bits(dlr.load(str(model)), (expected.coef_, expected.intercept_))


@pytest.mark.parametrize("cache_size", ["auto", "0"], ids=["cached-in-workers", "streamed"])
def test_bad_input_on_a_cluster_is_one_line_naming_the_chunk(cluster, tmp_path, cache_size):
    path = str(tmp_path / "bad.zarr")
    make_dataset(path, 2400, 6, chunk_samples=300, dtype="float32", seed=11)
    X = zarr.open_group(path, mode="r+")["X"]
    X[1234, 2] = np.inf
    result = invoke(
        "train",
        path,
        "--model",
        tmp_path / "m",
        "--scheduler",
        cluster.address,
        "--cache-size",
        cache_size,
    )
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert err.startswith("dlr: error: ") and "\n" not in err, err
    for words in ("NaN or inf", path, "chunk 4", "samples 1200–1499", "sample 1234"):
        assert words in err, err
    assert not (tmp_path / "m").exists()
