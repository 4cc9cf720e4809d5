"""Where dlr once disagreed with scikit-learn's LogisticRegression, it now agrees (or refuses
with the error scikit-learn's users expect)."""

import threading

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

import dlr
from tests.conftest import assert_matches

NAMES = np.array(["bar", "baz", "foo"])


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X, y


def test_a_class_weight_dict_names_string_labels_as_scikit_learn_does(iris):
    X, y = iris
    weights = {"bar": 1.0, "baz": 2.0, "foo": 1.0}
    model = dlr.LogisticRegression(tol=1e-10, class_weight=weights).fit(X, NAMES[y])
    coded = dlr.LogisticRegression(tol=1e-10, class_weight={0: 1.0, 1: 2.0, 2: 1.0}).fit(X, y)
    np.testing.assert_array_equal(model.coef_, coded.coef_)
    reference = SkLogisticRegression(tol=1e-12, max_iter=10_000, class_weight=weights)
    reference.fit(X, NAMES[y])
    assert_matches(model.coef_, reference.coef_, rtol=1e-5)
    assert model.classes_.tolist() == NAMES.tolist()


def test_a_class_weight_dict_naming_a_string_label_absent_from_y_is_an_error(iris):
    X, y = iris
    with pytest.raises(dlr.DlrError, match=r"class_weight names labels \['qux'\] absent from y"):
        dlr.LogisticRegression(class_weight={"bar": 1.0, "qux": 2.0}).fit(X, NAMES[y])


def test_a_validation_label_not_seen_in_training_is_an_error_naming_it(iris):
    X, y = iris
    train = y != 1  # "bar" and "foo": "baz" sorts between them
    with pytest.raises(dlr.DataError, match=r"validation labels \['baz'\] were not seen"):
        dlr.LogisticRegression().fit(X[train], NAMES[y[train]], validation_data=(X, NAMES[y]))


def test_string_validation_labels_seen_in_training_are_scored(iris):
    X, y = iris
    model = dlr.LogisticRegression(max_iter=5, tol=0).fit(
        X, NAMES[y], validation_data=(X[::2], NAMES[y[::2]])
    )
    coded = dlr.LogisticRegression(max_iter=5, tol=0).fit(X, y, validation_data=(X[::2], y[::2]))
    np.testing.assert_array_equal(model.validation_loss_history_, coded.validation_loss_history_)


def test_n_iter_is_an_array_of_shape_1_as_scikit_learns_and_survives_save_and_load(iris, tmp_path):
    X, y = iris
    model = dlr.LogisticRegression(tol=1e-8).fit(X, y)
    reference = SkLogisticRegression(tol=1e-8, max_iter=10_000).fit(X, y)
    assert model.n_iter_.shape == reference.n_iter_.shape == (1,)
    assert model.n_iter_.dtype == reference.n_iter_.dtype
    model.save(str(tmp_path / "model"))
    np.testing.assert_array_equal(dlr.load(str(tmp_path / "model")).n_iter_, model.n_iter_)


@pytest.mark.parametrize("solver", ["newton", "lbfgs", "gd"])
def test_max_iter_0_returns_the_initial_state_with_a_convergence_warning(iris, solver):
    X, y = iris
    with pytest.warns(ConvergenceWarning, match="max_iter=0"):
        model = dlr.LogisticRegression(solver=solver, max_iter=0).fit(X, y)
    assert model.n_iter_.tolist() == [0]
    assert not model.coef_.any() and not model.intercept_.any()
    np.testing.assert_allclose(model.predict_proba(X), 1 / 3)
    assert model.loss_history_.tolist() == [pytest.approx(np.log(3))]
    assert model.predict(X).shape == y.shape


def test_a_dask_array_with_unknown_chunk_sizes_gets_the_advice_to_compute_them(iris):
    X, y = iris
    Xd = da.from_array(X, chunks=50)
    unknown = Xd[Xd[:, 0] > 0]  # boolean indexing: dask no longer knows the chunk lengths
    with pytest.raises(dlr.DataError, match=r"unknown chunk sizes; call X.compute_chunk_sizes"):
        dlr.LogisticRegression().fit(unknown, y)
    yd = da.from_array(y, chunks=50)
    with pytest.raises(dlr.DataError, match=r"call y.compute_chunk_sizes"):
        dlr.LogisticRegression().fit(Xd, yd[yd >= 0])


def test_a_dask_array_of_sparse_blocks_is_refused_as_sparse_input(iris):
    X, y = iris
    sparse_blocks = da.from_array(X, chunks=50).map_blocks(sp.csr_matrix)
    with pytest.raises(dlr.DataError, match="sparse input is not supported"):
        dlr.LogisticRegression().fit(sparse_blocks, y)


class CountingArray:
    """An array-like whose reads (of at least one sample) dask's ``from_array`` counts."""

    def __init__(self, arr: np.ndarray):
        self.arr, self.shape, self.dtype, self.ndim = arr, arr.shape, arr.dtype, arr.ndim
        self.reads, self._lock = 0, threading.Lock()

    def __getitem__(self, key):
        out = self.arr[key]
        if out.shape[0]:
            with self._lock:
                self.reads += 1
        return out


@pytest.mark.parametrize("solver", ["gd", "lbfgs", "newton"])
def test_n_passes_counts_every_read_of_the_training_chunks_and_validation_is_read_alongside(
    solver,
):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 3))
    y = (X[:, 0] + rng.standard_normal(600) > 0).astype(int)
    train, valid = CountingArray(X), CountingArray(X[:200])
    model = dlr.LogisticRegression(solver=solver, max_iter=6, tol=0, cache_size=0).fit(
        da.from_array(train, chunks=(100, 3)),
        y,
        validation_data=(da.from_array(valid, chunks=(50, 3)), y[:200]),
    )
    assert model.n_passes_ > model.n_iter_[0]
    assert train.reads == 6 * model.n_passes_
    # the validation data is read alongside, at most once per training pass (its own summary
    # replaces one; Newton's first pass, at θ = 0 with the Hessian, needs no validation loss)
    assert valid.reads % 4 == 0 and model.n_passes_ - 1 <= valid.reads // 4 <= model.n_passes_
