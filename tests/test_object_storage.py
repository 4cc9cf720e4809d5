"""Datasets and predictions on S3, against a real S3-protocol server on 127.0.0.1 (moto in
server mode, a separate process): the same bits as from a local copy of the data."""

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import dlr
from dlr.cli import main
from dlr.cluster import local_cluster

KEY, SECRET = "dlr-test-key", "dlr-test-secret"
MAKE_ARGS = ["--samples", "1500", "--features", "5", "--chunk-samples", "256", "--seed", "7"]
TRAIN_ARGS = ["--learning-rate", "1.0", "--max-iter", "10", "--tol", "0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint():
    """``http://127.0.0.1:PORT`` of a moto S3 server running as a subprocess."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, "the moto server exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the moto server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def bucket(endpoint):
    import s3fs

    s3fs.S3FileSystem(endpoint_url=endpoint, key=KEY, secret=SECRET).mkdir("dlr-data")
    return "s3://dlr-data"


def dlr_ok(*args) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


@pytest.fixture(scope="module")
def copies(endpoint, bucket, tmp_path_factory):
    """The same dataset (same seed) written by ``dlr make-data`` to S3 and to a local path."""
    options = ["--storage-option", f"endpoint_url={endpoint}"]
    options += ["--storage-option", f"key={KEY}", "--storage-option", f"secret={SECRET}"]
    remote, local = f"{bucket}/data.zarr", str(tmp_path_factory.mktemp("local") / "data.zarr")
    dlr_ok("make-data", remote, *MAKE_ARGS, *options)
    dlr_ok("make-data", local, *MAKE_ARGS)
    storage = {"endpoint_url": endpoint, "key": KEY, "secret": SECRET}
    return {"remote": remote, "local": local, "options": options, "storage": storage}


def test_a_dataset_made_on_s3_is_described_like_the_local_copy(copies):
    remote = dlr_ok("info", copies["remote"], *copies["options"])
    local = dlr_ok("info", copies["local"])
    assert remote.replace(copies["remote"], "DATA") == local.replace(copies["local"], "DATA")
    assert "1500 samples × 5 features" in remote


def test_writing_to_a_bucket_that_does_not_exist_is_a_one_line_error(copies):
    out = "s3://no-such-bucket/data.zarr"
    result = CliRunner().invoke(main, ["make-data", out, *MAKE_ARGS, *copies["options"]])
    assert result.exit_code == 1
    assert (
        result.stderr == f"dlr: error: cannot write '{out}': The specified bucket does not exist\n"
    )


def test_training_predicting_and_evaluating_on_s3_match_the_local_copy(copies, tmp_path):
    remote, local, options = copies["remote"], copies["local"], copies["options"]
    dlr_ok("-q", "train", remote, "--model", tmp_path / "remote", *TRAIN_ARGS, *options)
    dlr_ok("-q", "train", local, "--model", tmp_path / "local", *TRAIN_ARGS)
    a, b = dlr.load(str(tmp_path / "remote")), dlr.load(str(tmp_path / "local"))
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.intercept_, b.intercept_)
    np.testing.assert_array_equal(a.loss_history_, b.loss_history_)

    model = tmp_path / "local"
    out = remote.replace("data.zarr", "proba.zarr")
    dlr_ok("predict", model, remote, "--out", out, *options)
    dlr_ok("predict", model, local, "--out", tmp_path / "proba.zarr")
    from_s3 = zarr.open_group(out, mode="r", storage_options=copies["storage"])["probability"]
    np.testing.assert_array_equal(
        from_s3[:], zarr.open_group(str(tmp_path / "proba.zarr"), mode="r")["probability"][:]
    )

    remote_metrics = json.loads(dlr_ok("evaluate", model, remote, "--json", *options))
    assert remote_metrics == json.loads(dlr_ok("evaluate", model, local, "--json"))


def test_workers_read_s3_with_credentials_from_the_environment(copies, tmp_path, monkeypatch):
    """Worker processes (a local cluster) open the S3 dataset themselves; the credentials come
    from the usual environment variables, only the endpoint is a storage option."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    endpoint = copies["options"][:2]
    local_model, cluster_model = tmp_path / "local", tmp_path / "cluster"
    dlr_ok("-q", "train", copies["local"], "--model", local_model, *TRAIN_ARGS)
    on_cluster = ["--model", cluster_model, "--workers", "1", *TRAIN_ARGS, *endpoint]
    dlr_ok("-q", "train", copies["remote"], *on_cluster)
    np.testing.assert_array_equal(
        dlr.load(str(cluster_model)).coef_, dlr.load(str(local_model)).coef_
    )


def test_workers_without_credentials_are_named_before_training(copies, tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    # botocore would otherwise look for credentials at the EC2 metadata address, off this machine
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with local_cluster(n_workers=1) as running:  # its workers have no credentials
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)  # only this process has them
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        endpoint = copies["options"][:2]
        args = [
            "train",
            copies["remote"],
            "--model",
            tmp_path / "m",
            "--scheduler",
            running.address,
        ]
        result = CliRunner().invoke(main, [str(a) for a in [*args, *endpoint]])
    assert result.exit_code == 1
    assert result.stderr.startswith("dlr: error: worker tcp://127.0.0.1:")
    assert "NoCredentialsError" in result.stderr
    assert f"cannot open '{copies['remote']}'" in result.stderr
    assert not (tmp_path / "m").exists()


def test_models_and_checkpoints_live_on_s3_too(copies, bucket, tmp_path):
    """Model and checkpoint URLs: train to s3://, resume from s3:// checkpoints, start a fit from
    an s3:// model, predict with it — the same bits as with local files."""
    import s3fs

    options, storage = copies["options"], copies["storage"]
    local_model = str(tmp_path / "model")
    dlr_ok("train", copies["local"], "--model", local_model, *TRAIN_ARGS)
    remote_model = f"{bucket}/models/m"
    dlr_ok(
        "train",
        copies["remote"],
        "--model",
        remote_model,
        *TRAIN_ARGS,
        *options,
        "--checkpoint",
        f"{bucket}/ckpt",
        "--checkpoint-every",
        "3",
    )
    remote = dlr.load(remote_model, storage)
    np.testing.assert_array_equal(remote.coef_, dlr.load(local_model).coef_)
    fs = s3fs.S3FileSystem(
        **{"endpoint_url": storage["endpoint_url"], "key": KEY, "secret": SECRET}
    )
    assert fs.exists(f"{bucket}/ckpt/LATEST")

    again = CliRunner().invoke(
        main, ["train", copies["remote"], "--model", remote_model, *TRAIN_ARGS, *options]
    )
    assert again.exit_code == 1 and "exists" in again.stderr
    dlr_ok(
        "train",
        copies["remote"],
        "--model",
        remote_model,
        "--overwrite",
        *TRAIN_ARGS,
        "--max-iter",
        "12",
        *options,
        "--checkpoint",
        f"{bucket}/ckpt",
        "--resume",
    )
    resumed = dlr.load(remote_model, storage)
    longer = dlr.LogisticRegression(learning_rate=1.0, max_iter=12, tol=0).fit(copies["local"])
    np.testing.assert_array_equal(resumed.coef_, longer.coef_)
    # the overwrite left exactly one model behind: model.json and the arrays it names
    files = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{bucket}/models/m"))
    assert len(files) == 3 and "model.json" in files

    warm = dlr.LogisticRegression(learning_rate=1.0, max_iter=2, tol=0).fit(
        copies["local"], init=remote_model, storage_options=storage
    )
    assert warm.loss_history_[0] == resumed.loss_history_[-1]
