"""Validation data, early stopping, warm starts from saved models, class weights, plots."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import dlr
from dlr.cli import main
from dlr.synthetic import make_dataset
from tests.conftest import assert_matches


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("options")
    train, valid = str(root / "train.zarr"), str(root / "valid.zarr")
    make_dataset(train, 2000, 8, chunk_samples=300, dtype="float64", seed=1)
    make_dataset(valid, 700, 8, chunk_samples=300, dtype="float64", seed=2)
    return root, train, valid


def mean_log_loss(model, path):
    from dlr import scoring
    from dlr.dataset import open_dataset
    from dlr.sources import from_dataset

    return scoring.evaluate(from_dataset(open_dataset(path)), model.theta_, model.classes_)[
        "log_loss"
    ]


def test_validation_loss_is_recorded_every_iteration_in_the_same_passes(datasets):
    _, train, valid = datasets
    model = dlr.LogisticRegression(solver="gd", C=np.inf, learning_rate=1.0, max_iter=10, tol=0)
    model.fit(train, validation_data=valid)
    plain = dlr.LogisticRegression(solver="gd", C=np.inf, learning_rate=1.0, max_iter=10, tol=0)
    plain.fit(train)
    assert model.validation_loss_history_.shape == (11,)
    assert model.n_passes_ == plain.n_passes_  # the validation chunks ride along in each pass
    np.testing.assert_array_equal(model.coef_, plain.coef_)
    assert model.validation_loss_history_[-1] == pytest.approx(mean_log_loss(model, valid), 1e-12)


def test_early_stopping_keeps_the_weights_with_the_best_validation_loss(datasets):
    _, train, valid = datasets
    model = dlr.LogisticRegression(
        solver="gd",
        C=np.inf,
        learning_rate=30.0,
        max_iter=200,
        tol=0,
        early_stopping=True,
        n_iter_no_change=3,
    )
    model.fit(train, validation_data=valid)
    history = model.validation_loss_history_
    best = int(np.argmin(history))
    assert model.n_iter_ == best + 3 < 200
    assert mean_log_loss(model, valid) == pytest.approx(history[best], rel=1e-12)


def test_early_stopping_without_validation_data_is_refused(datasets):
    _, train, _ = datasets
    with pytest.raises(dlr.DlrError, match="early_stopping needs validation_data"):
        dlr.LogisticRegression(early_stopping=True).fit(train)


def test_validation_labels_unknown_to_the_training_data_are_refused(datasets, tmp_path):
    _, train, _ = datasets
    X = np.random.default_rng(0).standard_normal((50, 8))
    with pytest.raises(dlr.DataError, match=r"validation labels .* include \[5\]"):
        dlr.LogisticRegression().fit(train, validation_data=(X, np.r_[np.zeros(49), 5]))


def test_training_resumes_from_a_saved_model(datasets):
    root, train, _ = datasets
    params = {"solver": "gd", "C": np.inf, "learning_rate": 1.0, "tol": 0}
    full = dlr.LogisticRegression(max_iter=20, **params).fit(train)
    first = dlr.LogisticRegression(max_iter=10, **params).fit(train)
    first.save(str(root / "half"))
    second = dlr.LogisticRegression(max_iter=10, **params).fit(train, init=str(root / "half"))
    np.testing.assert_array_equal(second.coef_, full.coef_)
    assert second.loss_history_[0] == full.loss_history_[10]


def test_a_model_of_other_classes_or_features_cannot_start_a_fit(datasets):
    _, train, _ = datasets
    rng = np.random.default_rng(0)
    other = dlr.LogisticRegression().fit(rng.standard_normal((60, 8)), np.arange(60) % 3)
    with pytest.raises(dlr.DlrError, match=r"classes \[0, 1, 2\].*classes \[0, 1\]"):
        dlr.LogisticRegression().fit(train, init=other)
    narrow = dlr.LogisticRegression().fit(rng.standard_normal((60, 3)), np.arange(60) % 2)
    with pytest.raises(dlr.DlrError, match="3 features"):
        dlr.LogisticRegression().fit(train, init=narrow)


def test_class_weight_dict_equals_the_same_weights_given_per_sample(datasets):
    _, train, _ = datasets
    import zarr

    y = zarr.open_group(train)["y"][:]
    by_class = dlr.LogisticRegression(tol=1e-10, class_weight={0: 1.0, 1: 4.0}).fit(train)
    X = zarr.open_group(train)["X"][:]
    by_sample = dlr.LogisticRegression(tol=1e-10).fit(X, y, sample_weight=np.where(y, 4.0, 1.0))
    assert_matches(by_class.coef_, by_sample.coef_, 1e-9)


def test_string_labels_in_memory_are_mapped_through_classes():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 3))
    y = np.where(X[:, 0] + 0.5 * rng.standard_normal(300) > 0, "spam", "ham")
    model = dlr.LogisticRegression().fit(X, y)
    assert model.classes_.tolist() == ["ham", "spam"]
    assert set(model.predict(X)) == {"ham", "spam"}
    assert model.score(X, y) > 0.7


def test_the_cli_trains_with_every_option_and_plots_the_loss(datasets):
    root, train, valid = datasets
    model, plot = str(root / "cli-model"), str(root / "loss.png")
    objective = ["--solver", "lbfgs", "--C", "0.5", "--l1-ratio", "0.5", "--standardize"]
    objective += ["--class-weight", "0=1,1=2"]
    result = CliRunner().invoke(
        main,
        [
            "train",
            train,
            "--model",
            model,
            *objective,
            "--validation",
            valid,
            "--early-stopping",
            "--n-iter-no-change",
            "2",
            "--max-iter",
            "50",
            "--tol",
            "1e-8",
            "--plot",
            plot,
            "--overwrite",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "solver lbfgs" in result.output
    meta = json.loads(open(f"{model}/model.json").read())
    assert meta["params"]["l1_ratio"] == 0.5 and meta["params"]["standardize"] is True
    assert meta["class_weight"] == {"0": 1.0, "1": 2.0}
    assert len(meta["validation_loss_history"]) == meta["n_iter"] + 1
    with open(plot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    loaded = dlr.load(model)
    assert loaded.class_weight == {0: 1.0, 1: 2.0}
    again = CliRunner().invoke(
        main,
        [
            "train",
            train,
            "--model",
            str(root / "m2"),
            "--init",
            model,
            *objective,
            "--tol",
            "1e-8",
        ],
    )
    assert again.exit_code == 0, again.output
