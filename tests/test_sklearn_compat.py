"""dlr.LogisticRegression is a scikit-learn estimator: every check passes, and it composes."""

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

import dlr


def test_passes_every_check_of_scikit_learns_check_estimator():
    results = check_estimator(dlr.LogisticRegression(), on_fail=None)
    failed = [
        (r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"
    ]
    assert len(results) > 50
    assert failed == []


def test_works_inside_a_pipeline_and_grid_search():
    X, y = load_iris(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), dlr.LogisticRegression(tol=1e-8))
    search = GridSearchCV(pipe, {"logisticregression__C": [0.01, 1.0, 100.0]}, cv=3).fit(X, y)
    assert search.best_params_["logisticregression__C"] in (1.0, 100.0)
    assert search.best_score_ > 0.9
    assert cross_val_score(pipe, X, y, cv=3).mean() > 0.9


def test_string_and_integer_class_labels_round_trip_through_predict():
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    model = dlr.LogisticRegression(tol=1e-8).fit(X, names)
    assert model.classes_.tolist() == ["setosa", "versicolor", "virginica"]
    assert model.predict(X).dtype.kind == "U"
    assert model.score(X, names) > 0.95


@pytest.mark.parametrize("param", ["C", "l1_ratio", "tol"])
def test_get_params_and_set_params_round_trip(param):
    model = dlr.LogisticRegression()
    model.set_params(**{param: 0.5})
    assert model.get_params()[param] == 0.5
