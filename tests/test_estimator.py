"""The Python API: any array kind in, scikit-learn-shaped attributes and predictions out."""

import io
import json
import logging

import dask.array as da
import numpy as np
import pytest
import zarr

import dlr
from dlr import oracle
from dlr.progress import ProgressReporter
from dlr.solvers import Progress
from tests.conftest import assert_matches, load_arrays

PARAMS = {"solver": "gd", "C": np.inf, "learning_rate": 1.0, "max_iter": 50, "tol": 0}


@pytest.fixture
def data(dataset):
    path = dataset(300, 4, 64)
    X, Y = load_arrays(path)
    return path, X.T.copy(), Y[0].astype(np.int64), oracle.gradient_descent(X, Y, 1.0, 50)


def inputs(path, X, y):
    group = zarr.open_group(path, mode="r")
    return {
        "dataset path": (path, None),
        "numpy": (X, y),
        "dask": (da.from_array(X, chunks=(77, 4)), da.from_array(y, chunks=50)),
        "dask X, numpy y": (da.from_array(X, chunks=(64, 4)), y),
        "zarr arrays": (group["X"], group["y"]),
        "zarr X, numpy y": (group["X"], y),
    }


@pytest.mark.parametrize(
    "kind", ["dataset path", "numpy", "dask", "dask X, numpy y", "zarr arrays", "zarr X, numpy y"]
)
def test_every_input_kind_trains_to_the_oracle(data, kind):
    path, X, y, ref = data
    Xin, yin = inputs(path, X, y)[kind]
    model = dlr.LogisticRegression(**PARAMS).fit(Xin, yin)
    assert_matches(model.coef_[0], ref.w[:, 0])
    assert_matches(model.intercept_, [ref.b])
    assert_matches(model.loss_history_, ref.losses)


def test_a_features_first_zarr_array_is_read_through_its_dimension_names(dataset):
    path = dataset(300, 4, 64, samples_first=False)
    group = zarr.open_group(path, mode="r")
    assert group["X"].shape == (4, 300)
    X, Y = load_arrays(path)
    model = dlr.LogisticRegression(**PARAMS).fit(group["X"], group["y"])
    assert_matches(model.coef_[0], oracle.gradient_descent(X, Y, 1.0, 50).w[:, 0])


def test_fitted_attributes_have_scikit_learn_shapes(data):
    path, *_ = data
    model = dlr.LogisticRegression(**PARAMS).fit(path)
    assert model.coef_.shape == (1, 4) and model.coef_.dtype == np.float64
    assert model.intercept_.shape == (1,)
    assert model.classes_.tolist() == [0, 1]
    assert model.n_features_in_ == 4
    assert model.n_iter_.shape == (1,) and model.n_iter_[0] == 50
    # the validating first pass (which also gives the loss and gradient at the start, w = b = 0)
    # and one pass per iteration
    assert model.n_passes_ == 51
    assert model.loss_history_.shape == (51,)
    assert model.grad_norm_history_.shape == (50,)
    assert model.grad_norm_history_[-1] < model.grad_norm_history_[0]


def test_predictions_are_numpy_for_numpy_input_and_lazy_for_dask_and_zarr(data):
    path, X, y, _ = data
    model = dlr.LogisticRegression(**PARAMS).fit(path)
    expected = 1 / (1 + np.exp(-(X @ model.coef_[0] + model.intercept_[0])))
    proba = model.predict_proba(X)
    assert isinstance(proba, np.ndarray) and proba.shape == (300, 2)
    assert_matches(proba[:, 1], expected, 1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-15)
    for lazy_input in (da.from_array(X, chunks=(100, 4)), path, zarr.open_group(path)["X"]):
        lazy = model.predict_proba(lazy_input)
        assert isinstance(lazy, da.Array) and lazy.shape == (300, 2)
        assert_matches(lazy.compute()[:, 1], expected, 1e-12)
    labels = model.predict(X)
    assert labels.dtype.kind == "i" and set(np.unique(labels)) <= {0, 1}
    np.testing.assert_array_equal(labels, (expected > 0.5).astype(int))
    np.testing.assert_array_equal(model.predict(da.from_array(X, chunks=50)).compute(), labels)
    assert model.score(X, y) == pytest.approx(np.mean(labels == y))
    assert model.score(da.from_array(X, chunks=50), da.from_array(y, chunks=50)) == model.score(
        X, y
    )


def test_save_and_load_round_trip_exactly(data, tmp_path):
    path, X, _, _ = data
    model = dlr.LogisticRegression(**PARAMS).fit(path)
    models = tmp_path / "models"
    model.save(str(models / "model"))
    loaded = dlr.load(str(models / "model"))
    np.testing.assert_array_equal(loaded.coef_, model.coef_)
    np.testing.assert_array_equal(loaded.intercept_, model.intercept_)
    np.testing.assert_array_equal(loaded.loss_history_, model.loss_history_)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.get_params() == model.get_params()
    assert loaded.n_iter_ == model.n_iter_
    assert loaded.data_fingerprint_["shape"] == [300, 4]
    assert sorted(p.name for p in models.iterdir()) == ["model"]  # no temporary left behind


def test_a_model_saved_before_exact_floats_loads_its_infinite_c_as_a_number(data, tmp_path):
    path, *_ = data
    target = tmp_path / "model"
    dlr.LogisticRegression(C=np.inf, max_iter=2, tol=0).fit(path).save(str(target))
    meta = json.loads((target / "model.json").read_text())
    meta["params"]["C"] = "inf"  # how models were written before {"float": "inf"}
    (target / "model.json").write_text(json.dumps(meta))
    assert dlr.load(str(target)).C == np.inf


def test_saving_over_an_existing_model_replaces_it_whole(data, tmp_path):
    path, *_ = data
    models = tmp_path / "models"
    target = str(models / "model")
    dlr.LogisticRegression(max_iter=1, tol=0).fit(path).save(target)
    second = dlr.LogisticRegression(**PARAMS).fit(path)
    second.save(target)
    np.testing.assert_array_equal(dlr.load(target).coef_, second.coef_)
    assert sorted(p.name for p in models.iterdir()) == ["model"]


def test_using_a_model_before_fit_is_a_clear_error():
    with pytest.raises(dlr.NotFittedError, match="not fitted"):
        dlr.LogisticRegression().predict(np.zeros((2, 2)))


def test_predicting_with_the_wrong_number_of_features_is_a_clear_error(data):
    path, X, *_ = data
    model = dlr.LogisticRegression(max_iter=1, tol=0).fit(path)
    with pytest.raises(
        dlr.DlrError, match="X has 3 features, but LogisticRegression is expecting 4 features"
    ):
        model.predict(X[:, :3])


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        ("solver", "sgd", "unknown solver 'sgd'"),
        ("C", 0.0, "C must be a positive number"),
        ("l1_ratio", 1.5, "l1_ratio must be between 0 and 1"),
        ("learning_rate", -1.0, "learning_rate must be a positive number"),
        ("max_iter", -1, "max_iter must be an integer ≥ 0"),
        ("solver", "saga", "unknown solver 'saga'"),
        ("l1_ratio", 2, "l1_ratio must be between 0 and 1"),
        ("C", -1, "C must be a positive number"),
        ("tol", -1e-3, "tol must be ≥ 0"),
        ("cache_size", "lots", "cannot read cache size 'lots'"),
    ],
)
def test_invalid_parameters_are_rejected_before_any_data_is_read(param, value, message):
    # a ValueError, as scikit-learn's InvalidParameterError, and a DlrError for the CLI
    with pytest.raises(dlr.InvalidParameterError, match=message) as caught:
        dlr.LogisticRegression(**{param: value}).fit("/nonexistent/never-opened.zarr")
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, dlr.DlrError)


def test_progress_is_logged_every_iteration_when_not_on_a_terminal(data, caplog):
    path, *_ = data
    with caplog.at_level(logging.INFO, logger="dlr"):
        dlr.LogisticRegression(solver="gd", C=np.inf, max_iter=3, tol=0, verbose=True).fit(path)
    lines = [r.getMessage() for r in caplog.records if r.name == "dlr"]
    assert len(lines) == 3
    assert lines[0].startswith("iter 1  loss 0.6")
    assert "  |grad| " in lines[0]
    assert lines[-1].startswith("iter 3  loss ") and lines[-1].endswith("s")


def test_progress_is_a_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    reporter = ProgressReporter(4, stream)
    reporter(Progress(2, 0.5, 0.01, 0.25))
    reporter.close()
    assert (
        "[############------------] 2/4  iter 2  loss 0.5  |grad| 0.01  0.250s" in stream.getvalue()
    )
