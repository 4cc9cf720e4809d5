"""Every ``dlr train`` flag the README lists, run end to end and shown to have its effect, and
the multiclass ``evaluate`` and ``predict`` outputs, against the same work done in memory."""

import json

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from sklearn.metrics import confusion_matrix, log_loss, roc_auc_score

import dlr
from dlr.cli import main
from dlr.dataset import create_arrays
from tests.conftest import assert_matches
from tests.test_bad_input import assert_nothing_published, assert_one_line_cli_error
from tests.test_solvers import make_problem, write

CHUNK = 150


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def train(data, model, *args):
    """``dlr -q train DATA --model MODEL ARGS``; it must succeed. Returns the loaded model."""
    result = cli("-q", "train", data, "--model", model, "--overwrite", *args)
    assert result.exit_code == 0, (result.output, result.exception)
    return dlr.load(str(model))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A binary dataset with weights 'w' (and a copy whose arrays are named 'features' and
    'labels'), a 3-class one, and the arrays in memory."""
    root = tmp_path_factory.mktemp("flags")
    rng = np.random.default_rng(4)
    X, y = make_problem(rng, m=600)
    s = rng.uniform(0.2, 3.0, len(y))
    binary = write(root / "binary.zarr", X, y, sample_weight=s, chunk=CHUNK)
    renamed = zarr.open_group(str(root / "renamed.zarr"), mode="w")
    xa, ya = create_arrays(renamed, 600, 5, CHUNK, dtype="float64", x="features", y="labels")
    xa[:], ya[:] = X, y
    X3, y3 = make_problem(rng, m=600, classes=3)
    three = write(root / "three.zarr", X3, y3, chunk=CHUNK)
    return {
        "root": root,
        "binary": binary,
        "renamed": str(root / "renamed.zarr"),
        "three": three,
        "X": X,
        "y": y,
        "s": s,
        "X3": X3,
        "y3": y3,
    }


def test_x_and_y_name_the_arrays_to_train_on(data, tmp_path):
    model = train(data["renamed"], tmp_path / "m", "--x", "features", "--y", "labels")
    reference = train(data["binary"], tmp_path / "ref")
    np.testing.assert_array_equal(model.coef_, reference.coef_)
    assert_one_line_cli_error(
        cli("train", data["renamed"], "--model", tmp_path / "no"), "'X'", data["renamed"]
    )


def test_sample_weight_trains_on_the_weights_array(data, tmp_path):
    model = train(data["binary"], tmp_path / "m", "--sample-weight", "w", "--tol", "1e-10")
    in_memory = dlr.LogisticRegression(tol=1e-10).fit(data["X"], data["y"], sample_weight=data["s"])
    unweighted = dlr.LogisticRegression(tol=1e-10).fit(data["X"], data["y"])
    assert_matches(model.coef_, in_memory.coef_)
    assert np.abs(model.coef_ - unweighted.coef_).max() > 1e-2


def test_no_intercept_fits_no_intercept(data, tmp_path):
    model = train(data["binary"], tmp_path / "m", "--no-intercept", "--tol", "1e-10")
    in_memory = dlr.LogisticRegression(tol=1e-10, fit_intercept=False).fit(data["X"], data["y"])
    assert model.intercept_.tolist() == [0.0]
    assert_matches(model.coef_, in_memory.coef_)


def test_line_search_backtracks_a_step_that_would_increase_the_loss(data, tmp_path):
    steps = ["--solver", "gd", "--learning-rate", "50", "--max-iter", "15", "--tol", "0"]
    fixed = train(data["binary"], tmp_path / "fixed", *steps)
    searched = train(data["binary"], tmp_path / "searched", *steps, "--line-search")
    assert np.diff(fixed.loss_history_).max() > 0  # a step of 50 overshoots: the loss goes up
    assert np.diff(searched.loss_history_).max() <= 0
    assert searched.line_search is True and fixed.line_search is False


def test_memory_sets_the_lbfgs_correction_pairs(data, tmp_path):
    args = ["--solver", "lbfgs", "--max-iter", "8", "--tol", "0"]
    one_pair = train(data["binary"], tmp_path / "one", *args, "--memory", "1")
    default = train(data["binary"], tmp_path / "ten", *args)
    in_memory = dlr.LogisticRegression(solver="lbfgs", max_iter=8, tol=0, memory=1)
    in_memory.fit(data["binary"])
    np.testing.assert_array_equal(one_pair.loss_history_, in_memory.loss_history_)
    assert not np.array_equal(one_pair.loss_history_, default.loss_history_)
    assert one_pair.memory == 1


@pytest.mark.parametrize(("seconds", "saved"), [("3600", [5]), ("1e-9", [1, 2, 3, 4, 5])])
def test_checkpoint_seconds_spaces_the_checkpoints_in_time(data, tmp_path, seconds, saved):
    store = tmp_path / "ckpt"
    train(
        data["binary"],
        tmp_path / "m",
        *["--solver", "gd", "--max-iter", "5", "--tol", "0", "--keep-checkpoints", "10"],
        *["--checkpoint", store, "--checkpoint-seconds", seconds],
    )
    names = sorted(p.name for p in store.iterdir() if p.name.startswith("ckpt-"))
    # an hour apart: only the final state; a nanosecond apart: every iteration
    assert [int(n[5:13]) for n in names] == saved


def test_stopping_at_max_iter_before_tol_prints_one_warning_line(data, tmp_path):
    args = ["train", data["binary"], "--model", tmp_path / "m", "--solver", "lbfgs"]
    stopped = cli("-q", *args, "--max-iter", "2", "--tol", "1e-10")
    assert stopped.exit_code == 0, stopped.output
    warnings = [line for line in stopped.stderr.splitlines() if line.startswith("dlr: warning:")]
    assert len(warnings) == 1, stopped.stderr
    assert "max_iter=2" in warnings[0] and "increase max_iter" in warnings[0]
    converged = cli("-q", *args, "--overwrite", "--max-iter", "100", "--tol", "1e-6")
    assert converged.exit_code == 0 and "dlr: warning:" not in converged.stderr


def test_bad_sample_weights_are_one_line_naming_chunk_and_sample(data, tmp_path):
    path = write(
        tmp_path / "bad.zarr",
        data["X"],
        data["y"],
        sample_weight=np.r_[data["s"][:400], -1.0, data["s"][401:]],
        chunk=CHUNK,
    )
    result = cli("train", path, "--model", tmp_path / "m", "--sample-weight", "w")
    assert_one_line_cli_error(
        result,
        "sample weights must be finite and ≥ 0",
        "chunk 2",
        "samples 300–449",
        "-1 at sample 400",
    )
    assert_nothing_published(tmp_path, "m")


def test_bad_features_streamed_with_cache_size_0_are_named_by_chunk_and_sample(data, tmp_path):
    X = data["X"].copy()
    X[512, 3] = np.nan
    path = write(tmp_path / "bad.zarr", X, data["y"], chunk=CHUNK)
    result = cli("train", path, "--model", tmp_path / "m", "--cache-size", "0")
    assert_one_line_cli_error(result, "NaN or inf", "chunk 3", "samples 450–599", "sample 512")
    assert_nothing_published(tmp_path, "m")


@pytest.fixture(scope="module")
def multiclass_model(data):
    model = data["root"] / "three-model"
    return train(data["three"], model, "--C", "0.5", "--tol", "1e-8"), model


def test_evaluate_a_multiclass_model_gives_macro_auc_and_calibration_as_in_memory(
    data, multiclass_model
):
    model, path = multiclass_model
    result = cli("evaluate", path, data["three"], "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    X, y = data["X3"], data["y3"]
    P = model.predict_proba(X)
    assert metrics["classes"] == [0, 1, 2]
    assert metrics["log_loss"] == pytest.approx(log_loss(y, P), rel=1e-12)
    auc = roc_auc_score(y, P, multi_class="ovr", average="macro")
    assert abs(metrics["roc_auc"] - auc) <= 1e-6
    assert metrics["confusion_matrix"] == confusion_matrix(y, P.argmax(axis=1)).tolist()
    # reliability of the top-class probability: per tenth, its mean and the fraction correct
    top, hit = P.max(axis=1), P.argmax(axis=1) == y
    bins = np.minimum((top * 10).astype(int), 9)
    for b, row in enumerate(metrics["calibration"]):
        inside = bins == b
        assert row["count"] == inside.sum()
        if inside.any():
            assert row["mean_predicted"] == pytest.approx(top[inside].mean(), rel=1e-12)
            assert row["observed"] == pytest.approx(hit[inside].mean(), rel=1e-12)
    text = cli("evaluate", path, data["three"])
    assert "calibration (top-class probability in bins)" in text.stdout


def test_predict_writes_m_by_k_probabilities_for_a_multiclass_model(
    data, multiclass_model, tmp_path
):
    model, path = multiclass_model
    out = tmp_path / "proba.zarr"
    result = cli("predict", path, data["three"], "--out", out)
    assert result.exit_code == 0, result.output
    written = zarr.open_group(str(out), mode="r")["probability"]
    assert written.shape == (600, 3) and written.chunks[0] == CHUNK
    np.testing.assert_allclose(written[:], model.predict_proba(data["X3"]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(written[:].sum(axis=1), 1.0)
