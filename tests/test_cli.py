"""The ``dlr`` command line end to end: make-data → info → train → evaluate → predict, on real
zarr stores, checked against the same model applied in memory and against scikit-learn."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

import dlr
from dlr.cli import main
from dlr.synthetic import make_dataset

N_SAMPLES = 3000
N_FEATURES = 6
CHUNK = 700  # 5 chunks, the last one of 200 samples
TRAIN_ARGS = [
    "--solver",
    "gd",
    "--C",
    "inf",
    "--learning-rate",
    "1.0",
    "--max-iter",
    "30",
    "--tol",
    "0",
]
DLR_SCRIPT = str(Path(sys.executable).parent / "dlr")


def dlr_ok(*args: str) -> str:
    """Run the CLI in process; it must succeed. Returns its stdout."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def load_in_memory(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole dataset as X (samples × features) and y, straight from zarr."""
    group = zarr.open_group(path, mode="r")
    x = group["X"]
    X = x[:].T if x.metadata.dimension_names == ("feature", "sample") else x[:]
    return X, group["y"][:]


@pytest.fixture(
    scope="module",
    params=[
        ("samples-first", "float32"),
        ("samples-first", "float64"),
        ("features-first", "float32"),
        ("features-first", "float64"),
    ],
    ids=lambda p: "-".join(p),
)
def run(request, tmp_path_factory):
    """A dataset written by ``dlr make-data`` and a model trained on it by ``dlr train``."""
    layout, dtype = request.param
    root = tmp_path_factory.mktemp(f"{layout}-{dtype}")
    data, model = str(root / "data.zarr"), str(root / "model")
    made = dlr_ok(
        "make-data",
        data,
        "--samples",
        N_SAMPLES,
        "--features",
        N_FEATURES,
        "--chunk-samples",
        CHUNK,
        "--layout",
        layout,
        "--dtype",
        dtype,
        "--seed",
        3,
    )
    trained = dlr_ok("train", data, "--model", model, *TRAIN_ARGS)
    return {
        "root": root,
        "data": data,
        "model": model,
        "layout": layout,
        "dtype": dtype,
        "make_data_output": made,
        "train_output": trained,
    }


def test_make_data_writes_a_dlr_dataset_in_the_requested_layout_and_dtype(run):
    group = zarr.open_group(run["data"], mode="r")
    X, y = group["X"], group["y"]
    if run["layout"] == "samples-first":
        assert X.shape == (N_SAMPLES, N_FEATURES)
        assert X.chunks == (CHUNK, N_FEATURES)
        assert X.metadata.dimension_names == ("sample", "feature")
    else:
        assert X.shape == (N_FEATURES, N_SAMPLES)
        assert X.chunks == (N_FEATURES, CHUNK)
        assert X.metadata.dimension_names == ("feature", "sample")
    assert X.dtype == np.dtype(run["dtype"])
    assert y.shape == (N_SAMPLES,) and y.chunks == (CHUNK,)
    assert set(np.unique(y[:])) == {0, 1}
    assert len(group.attrs["dlr"]["true_coef"]) == N_FEATURES
    assert f"{N_SAMPLES} samples × {N_FEATURES} features" in run["make_data_output"]
    assert not [p.name for p in run["root"].iterdir() if p.name.startswith(".")]


def test_info_prints_layout_shape_and_chunks(run):
    out = dlr_ok("info", run["data"])
    shape = (N_SAMPLES, N_FEATURES) if run["layout"] == "samples-first" else (N_FEATURES, N_SAMPLES)
    assert f"{run['dtype']}, {run['layout']} {shape}" in out
    assert f"{N_SAMPLES} samples × {N_FEATURES} features" in out
    assert f"5 of {CHUNK} samples (last {N_SAMPLES - 4 * CHUNK})" in out
    assert "crc32c" in out


def test_train_writes_a_model_directory_with_metadata_and_arrays(run):
    model = Path(run["model"])
    assert sorted(p.name for p in model.iterdir()) == ["coef.npy", "intercept.npy", "model.json"]
    meta = json.loads((model / "model.json").read_text())
    assert meta["format"] == "dlr-model"
    assert meta["dlr_version"] == dlr.__version__
    assert meta["params"]["learning_rate"] == 1.0
    assert meta["params"]["max_iter"] == 30
    assert meta["params"]["tol"] == 0
    assert meta["data"]["shape"] == [N_SAMPLES, N_FEATURES]
    assert meta["data"]["layout"] == run["layout"]
    assert meta["data"]["chunk_samples"] == CHUNK
    assert meta["data"]["dtype"] == run["dtype"]
    assert meta["n_iter"] == 30 == len(meta["loss_history"]) - 1
    assert meta["loss_history"][0] == pytest.approx(np.log(2))
    assert np.all(np.diff(meta["loss_history"]) < 0)
    coef = np.load(model / "coef.npy", allow_pickle=False)
    intercept = np.load(model / "intercept.npy", allow_pickle=False)
    assert coef.shape == (1, N_FEATURES) and coef.dtype == np.float64
    assert intercept.shape == (1,) and intercept.dtype == np.float64
    assert "30 iterations" in run["train_output"]
    assert not [p.name for p in run["root"].iterdir() if p.name.startswith(".model")]


def test_train_cli_gives_the_same_model_as_the_python_api(run):
    cli_model = dlr.load(run["model"])
    api_model = dlr.LogisticRegression(
        solver="gd", C=np.inf, learning_rate=1.0, max_iter=30, tol=0
    ).fit(run["data"])
    np.testing.assert_array_equal(cli_model.coef_, api_model.coef_)
    np.testing.assert_array_equal(cli_model.intercept_, api_model.intercept_)
    np.testing.assert_array_equal(cli_model.loss_history_, api_model.loss_history_)


def test_evaluate_json_equals_sklearn_metrics_computed_in_memory(run):
    metrics = json.loads(dlr_ok("evaluate", run["model"], run["data"], "--json"))
    model = dlr.load(run["model"])
    X, y = load_in_memory(run["data"])
    p = model.predict_proba(X)[:, 1]
    assert metrics["n_samples"] == N_SAMPLES
    assert metrics["accuracy"] > 0.6
    assert abs(metrics["log_loss"] - log_loss(y, p)) <= 1e-12
    assert abs(metrics["accuracy"] - accuracy_score(y, model.predict(X))) <= 1e-12
    auc_error = abs(metrics["roc_auc"] - roc_auc_score(y, model.decision_function(X)))
    assert auc_error <= metrics["roc_auc_error_bound"] + 1e-12 <= 1e-6 + 1e-12


def test_evaluate_prints_scores_confusion_matrix_and_calibration(run):
    out = dlr_ok("evaluate", run["model"], run["data"])
    metrics = json.loads(dlr_ok("evaluate", run["model"], run["data"], "--json"))
    head = dict(line.split(maxsplit=1) for line in out.strip().splitlines()[:4])
    assert int(head["samples"]) == metrics["n_samples"]
    for key in ("log_loss", "accuracy", "roc_auc"):
        assert float(head[key]) == pytest.approx(metrics[key], rel=1e-5)
    matrix = metrics["confusion_matrix"]
    assert sum(map(sum, matrix)) == metrics["n_samples"]
    assert metrics["accuracy"] == pytest.approx(
        (matrix[0][0] + matrix[1][1]) / metrics["n_samples"]
    )
    assert "confusion matrix (rows: true class, columns: predicted)" in out
    assert "calibration (P(y=1) in bins)" in out
    table = metrics["calibration"]
    assert len(table) == 10 and sum(row["count"] for row in table) == metrics["n_samples"]


def test_predict_writes_probabilities_chunked_like_the_input(run):
    out = str(run["root"] / "proba.zarr")
    dlr_ok("predict", run["model"], run["data"], "--out", out)
    written = zarr.open_group(out, mode="r")["probability"]
    assert written.shape == (N_SAMPLES,)
    assert written.chunks == (CHUNK,)
    assert written.dtype == np.float64
    X, _ = load_in_memory(run["data"])
    expected = dlr.load(run["model"]).predict_proba(X)[:, 1]
    np.testing.assert_allclose(written[:], expected, rtol=0, atol=1e-12)
    assert not [p.name for p in run["root"].iterdir() if p.name.startswith(".proba")]


def test_predict_refuses_an_existing_output_unless_overwrite(run, tmp_path):
    out = str(tmp_path / "proba.zarr")
    zarr.create_array(out, shape=(3,), dtype="float64", fill_value=7.0)
    result = CliRunner().invoke(main, ["predict", run["model"], run["data"], "--out", out])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("dlr: error: ") and "exists" in result.stderr
    assert zarr.open_array(out, mode="r").shape == (3,)

    dlr_ok("predict", run["model"], run["data"], "--out", out, "--overwrite")
    assert zarr.open_group(out, mode="r")["probability"].shape == (N_SAMPLES,)
    assert [p.name for p in tmp_path.iterdir()] == ["proba.zarr"]


def test_train_on_a_local_cluster_of_2_workers_is_bit_identical_to_threads(tmp_path):
    data = str(tmp_path / "data.zarr")
    make_dataset(data, 2000, 5, chunk_samples=400, dtype="float32", seed=1)
    args = ["train", data, *TRAIN_ARGS, "--max-iter", "15"]
    dlr_ok(*args, "--model", tmp_path / "threads")
    proc = subprocess.run(
        [DLR_SCRIPT, "-q", *args, "--model", str(tmp_path / "cluster"), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    threads, cluster = dlr.load(str(tmp_path / "threads")), dlr.load(str(tmp_path / "cluster"))
    assert cluster.n_iter_ == threads.n_iter_ == 15
    np.testing.assert_array_equal(cluster.coef_, threads.coef_)
    np.testing.assert_array_equal(cluster.intercept_, threads.intercept_)
    np.testing.assert_array_equal(cluster.loss_history_, threads.loss_history_)


def test_demo_reports_that_dlr_and_the_oracle_agree(tmp_path):
    out = dlr_ok(
        "demo", "--samples", 20000, "--chunk-samples", 3000, "--max-iter", 20, "--dir", tmp_path
    )
    assert "dlr and the oracle agree" in out
    assert "DISAGREE" not in out


def test_version_option_prints_the_package_version():
    assert dlr_ok("--version").strip() == f"dlr, version {dlr.__version__}"
