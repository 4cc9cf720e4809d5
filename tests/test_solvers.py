"""Every solver reaches scikit-learn's optimum, for every penalty and modelling option.

The reference is scikit-learn's ``LogisticRegression`` fitted to tol 1e-12 in memory on the same
data ("newton-cholesky" for L2 or no penalty, "saga" for L1 and elastic net). With
``standardize``, scikit-learn fits the standardized features and its coefficients are mapped
back to the original scale. dlr trains from a zarr dataset with a ragged last chunk.
"""

import numpy as np
import pytest
import zarr
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_class_weight

import dlr
from dlr.dataset import create_arrays
from dlr.solvers import SOLVERS, choose
from tests.conftest import assert_matches

PENALTIES = {
    "none": {"C": np.inf, "l1_ratio": 0.0},
    "l2": {"C": 0.5, "l1_ratio": 0.0},
    "l1": {"C": 0.05, "l1_ratio": 1.0},
    "elastic-net": {"C": 0.05, "l1_ratio": 0.5},
}
SCALES = np.array([1.0, 10.0, 0.1, 3.0, 1.0])
MEANS = np.array([0.0, 5.0, -1.0, 0.0, 2.0])


def make_problem(rng, m=600, classes=2):
    X = rng.standard_normal((m, len(SCALES))) * SCALES + MEANS
    W = rng.standard_normal((classes, len(SCALES))) / SCALES
    Z = (X - MEANS) @ W.T
    if classes == 2:
        y = (rng.random(m) < 1 / (1 + np.exp(-(Z[:, 1] - Z[:, 0])))).astype(np.int64)
    else:
        P = np.exp(Z - Z.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        y = np.array([rng.choice(classes, p=p) for p in P])
    return X, y


def write(path, X, y, sample_weight=None, chunk=128):
    group = zarr.open_group(str(path), mode="w")
    xa, ya = create_arrays(group, len(X), X.shape[1], chunk, dtype="float64")
    xa[:] = X
    ya[:] = y.astype(np.uint8)
    if sample_weight is not None:
        wa = group.create_array(
            "w",
            shape=(len(X),),
            chunks=(chunk,),
            dtype="float64",
            config={"write_empty_chunks": True},
        )
        wa[:] = sample_weight
    return str(path)


def sklearn_fit(
    X,
    y,
    *,
    C,
    l1_ratio,
    fit_intercept=True,
    standardize=False,
    sample_weight=None,
    class_weight=None,
):
    """scikit-learn's optimum, coefficients on the original feature scale; ``standardize``
    scales as ``StandardScaler().fit(X, sample_weight=sample_weight)`` does."""
    mean, scale = 0.0, 1.0
    if standardize:
        scaler = StandardScaler().fit(X, sample_weight=sample_weight)
        mean, scale = scaler.mean_, scaler.scale_
    solver = "newton-cholesky" if l1_ratio == 0 else "saga"
    sk = SkLogisticRegression(
        C=C,
        l1_ratio=l1_ratio,
        fit_intercept=fit_intercept,
        solver=solver,
        class_weight=class_weight,
        tol=1e-12,
        max_iter=100_000,
    )
    sk.fit((X - mean) / scale, y, sample_weight=sample_weight)
    coef = sk.coef_ / scale
    intercept = sk.intercept_ - coef @ np.broadcast_to(mean, X.shape[1:])
    return coef, intercept


def assert_same_model(model, coef, intercept, rtol):
    scale = np.linalg.norm(coef) + np.linalg.norm(intercept)
    err = (
        np.linalg.norm(model.coef_ - coef) + np.linalg.norm(model.intercept_ - intercept)
    ) / scale
    assert err <= rtol, f"relative difference {err:.2e} from scikit-learn exceeds {rtol:.0e}"


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    rng = np.random.default_rng(11)
    X, y = make_problem(rng)
    s = rng.uniform(0.2, 3.0, len(y))
    path = write(tmp_path_factory.mktemp("binary") / "data.zarr", X, y, sample_weight=s)
    return path, X, y, s


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("standardize", [False, True], ids=["raw", "standardized"])
@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no-intercept"])
@pytest.mark.parametrize("penalty", PENALTIES)
@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_newton_and_lbfgs_reach_scikit_learns_optimum(
    binary, solver, penalty, fit_intercept, standardize, weighted
):
    path, X, y, s = binary
    options = {**PENALTIES[penalty], "fit_intercept": fit_intercept, "standardize": standardize}
    weights = {"sample_weight": s, "class_weight": "balanced"} if weighted else {}
    model = dlr.LogisticRegression(
        solver=solver, tol=1e-10, max_iter=500, **options, class_weight=weights.get("class_weight")
    )
    model.fit(path, sample_weight="w" if weighted else None)
    coef, intercept = sklearn_fit(X, y, **options, **weights)
    assert model.converged_
    assert_same_model(model, coef, intercept, 1e-5 if PENALTIES[penalty]["l1_ratio"] == 0 else 1e-4)
    if PENALTIES[penalty]["l1_ratio"] == 1.0:
        np.testing.assert_array_equal(model.coef_ == 0, np.abs(coef) < 1e-8)


@pytest.mark.parametrize("penalty", ["l2", "l1"])
@pytest.mark.parametrize(
    "variant", [{"line_search": True}, {"nesterov": True}], ids=["backtracking", "nesterov"]
)
def test_gradient_descent_variants_reach_scikit_learns_optimum(binary, penalty, variant):
    path, X, y, _ = binary
    options = {**PENALTIES[penalty], "standardize": True}
    model = dlr.LogisticRegression(
        solver="gd", learning_rate=4.0, tol=1e-13, max_iter=5000, **options, **variant
    ).fit(path)
    coef, intercept = sklearn_fit(X, y, **options)
    assert_same_model(model, coef, intercept, 1e-5 if penalty == "l2" else 1e-4)


def test_backtracking_gradient_descent_reaches_the_precision_of_the_fixed_step():
    # Near the optimum, F changes by less than its rounding error: a backtracking test blind to
    # that halved the step on noise (0.5 → 1.9e-9) and left max|∇F| at 2e-8.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4))
    y = (X @ [1.0, -1.0, 0.5, 0.0] + rng.standard_normal(300) > 0).astype(int)
    common = {"solver": "gd", "learning_rate": 0.5, "tol": 0, "max_iter": 1500}
    fixed = dlr.LogisticRegression(**common).fit(X, y)
    backtracking = dlr.LogisticRegression(**common, line_search=True).fit(X, y)
    assert fixed.grad_norm_history_[-1] < 1e-14
    assert backtracking.grad_norm_history_[-1] <= 2 * fixed.grad_norm_history_[-1]
    assert backtracking.state_.step == 0.5


@pytest.mark.parametrize(
    ("solver", "option"),
    [("gd", "memory"), ("lbfgs", "learning_rate"), ("newton", "nesterov"), ("lbfgs", "tl")],
)
def test_a_solver_is_built_from_its_own_options_only(solver, option):
    with pytest.raises(TypeError, match=option):
        SOLVERS[solver](tol=1e-4, **{option: 1})


def test_the_solvers_agree_with_each_other(binary):
    path, *_ = binary
    common = {"C": 2.0, "standardize": True, "max_iter": 5000}
    fits = {
        "newton": dlr.LogisticRegression(solver="newton", tol=1e-10, **common),
        "lbfgs": dlr.LogisticRegression(solver="lbfgs", tol=1e-10, **common),
        # gradient descent's tol bounds the relative change of the loss, not the gradient
        "gd": dlr.LogisticRegression(
            solver="gd", tol=1e-14, learning_rate=4.0, nesterov=True, **common
        ),
    }
    for model in fits.values():
        model.fit(path)
    assert_matches(fits["lbfgs"].coef_, fits["newton"].coef_, 1e-7)
    assert_matches(fits["gd"].coef_, fits["newton"].coef_, 1e-6)
    assert fits["newton"].n_passes_ < fits["lbfgs"].n_passes_ < fits["gd"].n_passes_


@pytest.mark.parametrize("chunk", [600, 128, 7])
def test_the_optimum_does_not_depend_on_the_chunking(binary, tmp_path, chunk):
    _, X, y, _ = binary
    path = write(tmp_path / "data.zarr", X, y, chunk=chunk)
    model = dlr.LogisticRegression(solver="newton", C=0.5, tol=1e-12).fit(path)
    coef, intercept = sklearn_fit(X, y, C=0.5, l1_ratio=0.0)
    assert_same_model(model, coef, intercept, 1e-9)


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_a_warm_start_at_the_optimum_stops_after_at_most_one_iteration(binary, solver):
    path, *_ = binary
    model = dlr.LogisticRegression(solver=solver, tol=1e-8, standardize=True).fit(path)
    model.set_params(warm_start=True)
    before = model.coef_.copy()
    model.fit(path)
    assert model.n_iter_ <= 1
    assert_matches(model.coef_, before, 1e-8)


@pytest.mark.parametrize(
    "n_params, n_samples, expected",
    [
        (6, 10**9, "newton"),  # a handful of parameters: the Hessian is nearly free
        (31, 569, "newton"),  # breast cancer: m·p² = 5.5e5
        (650, 1797, "newton"),  # digits, 10 classes: m·p² = 7.6e8
        (65, 4_000_000, "lbfgs"),  # m·p² = 1.7e10: a Hessian pass costs 5 gradient passes
        (1001, 10, "lbfgs"),  # the p × p solve, p³ = 1.003e9, is not cheap
    ],
)
def test_auto_picks_newton_wherever_its_hessian_pass_is_cheap(n_params, n_samples, expected):
    assert choose("auto", n_params, n_samples) == expected
    assert choose("gd", n_params, n_samples) == "gd"


def test_auto_fits_with_the_solver_it_picks():
    X, y = make_problem(np.random.default_rng(0))
    wide = np.hstack([X] * 5)  # 26 parameters, 600 samples
    assert dlr.LogisticRegression(C=0.1).fit(wide, y).solver_ == "newton"


@pytest.mark.parametrize(
    "solver, advice",
    [
        (
            "gd",
            r"increase max_iter or learning_rate, .*\(none of these changes the model\); "
            r"standardize=True .* changes the model",
        ),
        ("lbfgs", r"increase max_iter, or use solver='newton', .*\(neither changes the model\)"),
        ("newton", r"increase max_iter \(neither changes the model\)"),
    ],
)
def test_hitting_max_iter_warns_what_to_change_and_whether_it_changes_the_model(
    binary, solver, advice
):
    path, *_ = binary
    with pytest.warns(
        ConvergenceWarning,
        match=rf"solver '{solver}'\) stopped before converging: it reached max_iter=1; {advice}",
    ):
        dlr.LogisticRegression(solver=solver, max_iter=1, tol=1e-12).fit(path)


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
@pytest.mark.parametrize("C", [1.0, 0.1])
def test_multinomial_on_iris_matches_scikit_learn(solver, C):
    X, y = load_iris(return_X_y=True)
    model = dlr.LogisticRegression(solver=solver, C=C, tol=1e-10, max_iter=1000).fit(X, y)
    coef, intercept = sklearn_fit(X, y, C=C, l1_ratio=0.0)
    assert model.coef_.shape == (3, 4) and model.intercept_.shape == (3,)
    assert_same_model(model, coef, intercept - intercept.mean(), 1e-5)
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0)


@pytest.mark.parametrize("penalty", ["l2", "elastic-net"])
def test_multinomial_with_five_classes_from_zarr_matches_scikit_learn(tmp_path, penalty):
    rng = np.random.default_rng(5)
    X, y = make_problem(rng, m=800, classes=5)
    path = write(tmp_path / "data.zarr", X, y, chunk=300)
    options = PENALTIES[penalty]
    model = dlr.LogisticRegression(solver="newton", tol=1e-10, standardize=True, **options)
    model.fit(path)
    coef, intercept = sklearn_fit(X, y, standardize=True, **options)
    assert_same_model(
        model, coef, intercept - intercept.mean(), 1e-5 if options["l1_ratio"] == 0 else 1e-4
    )
    assert model.classes_.tolist() == [0, 1, 2, 3, 4]
    proba = model.predict_proba(path).compute()
    assert proba.shape == (800, 5)
    np.testing.assert_array_equal(model.predict(X), model.classes_[proba.argmax(axis=1)])


def test_labels_are_any_integers_mapped_through_classes(binary):
    _, X, y, _ = binary
    shifted = np.where(y == 1, 7, -3)
    model = dlr.LogisticRegression(C=0.5, tol=1e-10).fit(X, shifted)
    reference = dlr.LogisticRegression(C=0.5, tol=1e-10).fit(X, y)
    assert model.classes_.tolist() == [-3, 7]
    np.testing.assert_array_equal(model.coef_, reference.coef_)
    assert set(np.unique(model.predict(X))) <= {-3, 7}


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    rng = np.random.default_rng(21)
    X, y = make_problem(rng, m=600, classes=3)
    s = rng.uniform(0.2, 3.0, len(y))
    path = write(tmp_path_factory.mktemp("three") / "data.zarr", X, y, sample_weight=s, chunk=150)
    return path, X, y, s


MULTINOMIAL_CASES = {
    "l1": ({"C": 0.05, "l1_ratio": 1.0}, False),
    "weighted": ({"C": 0.5, "class_weight": "balanced"}, True),
    "no-intercept": ({"C": 0.5, "fit_intercept": False}, False),
    "no-penalty": ({"C": np.inf}, False),
}


def centred(coef, intercept, C):
    """The representative of a softmax model that dlr reports: intercepts (and, unpenalized,
    coefficient rows) shifted to sum to zero over the classes."""
    if np.isinf(C):
        coef = coef - coef.mean(axis=0)
    return coef, intercept - intercept.mean()


@pytest.mark.parametrize("case", MULTINOMIAL_CASES)
@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_multinomial_from_zarr_reaches_scikit_learns_optimum_for_every_option(
    three_classes, solver, case
):
    path, X, y, s = three_classes
    options, weighted = MULTINOMIAL_CASES[case]
    model = dlr.LogisticRegression(solver=solver, tol=1e-10, max_iter=1000, **options)
    model.fit(path, sample_weight="w" if weighted else None)
    reference = {"sample_weight": s} if weighted else {}
    coef, intercept = sklearn_fit(X, y, **{"l1_ratio": 0.0, **options, **reference})
    assert model.converged_ and model.coef_.shape == (3, 5)
    assert_same_model(
        model, *centred(coef, intercept, options["C"]), 1e-4 if case == "l1" else 1e-5
    )


GD_CASES = {
    "weighted": ({"C": 0.5, "class_weight": "balanced"}, True),
    "no-intercept": ({"C": 0.5, "fit_intercept": False}, False),
    "elastic-net": (PENALTIES["elastic-net"], False),
    "no-penalty": (PENALTIES["none"], False),
}


@pytest.mark.parametrize("case", GD_CASES)
def test_gradient_descent_reaches_scikit_learns_optimum_for_every_option(binary, case):
    path, X, y, s = binary
    options, weighted = GD_CASES[case]
    model = dlr.LogisticRegression(
        solver="gd",
        learning_rate=4.0,
        nesterov=True,
        standardize=True,
        tol=1e-14,
        max_iter=5000,
        **options,
    ).fit(path, sample_weight="w" if weighted else None)
    reference = {"sample_weight": s} if weighted else {}
    coef, intercept = sklearn_fit(
        X, y, standardize=True, **{"l1_ratio": 0.0, **options, **reference}
    )
    assert_same_model(model, coef, intercept, 1e-4 if case == "elastic-net" else 1e-5)


def test_standardizing_weighs_the_moments_by_the_sample_weights():
    """Samples of weight 0 move neither the model nor the scaling: iris plus 50 zero-weight
    outliers is iris alone, as StandardScaler(sample_weight) + LogisticRegression gives."""
    X, y = load_iris(return_X_y=True)
    rng = np.random.default_rng(3)
    outliers = rng.normal(0.0, 100.0, (50, X.shape[1])) + 500.0
    X_more = np.vstack([X, outliers])
    y_more = np.concatenate([y, rng.integers(0, 3, 50)])
    s = np.concatenate([rng.uniform(0.5, 2.0, len(y)), np.zeros(50)])
    options = {"standardize": True, "tol": 1e-10, "max_iter": 1000}
    model = dlr.LogisticRegression(**options).fit(X_more, y_more, sample_weight=s)
    alone = dlr.LogisticRegression(**options).fit(X, y, sample_weight=s[: len(y)])
    coef, intercept = sklearn_fit(
        X_more, y_more, C=1.0, l1_ratio=0.0, standardize=True, sample_weight=s
    )
    assert_same_model(model, coef, intercept - intercept.mean(), 1e-6)
    assert_same_model(model, alone.coef_, alone.intercept_, 1e-8)


@pytest.mark.parametrize("classes", [2, 3])
def test_balanced_class_weights_with_a_class_weighing_nothing_match_scikit_learn(classes):
    """A class whose sample weights are all 0 weighs nothing; the others get scikit-learn's
    balanced weights S / (K·S_c) over the K classes in y (scikit-learn's own S / 0 for the
    empty class turns those samples' weights into NaN). Without an intercept the optimum is
    finite."""
    X, y = load_iris(return_X_y=True)
    y = np.minimum(y, classes - 1)
    s = np.random.default_rng(4).uniform(0.5, 2.0, len(y))
    s[y == classes - 1] = 0.0
    model = dlr.LogisticRegression(
        class_weight="balanced", fit_intercept=False, tol=1e-10, max_iter=1000
    ).fit(X, y, sample_weight=s)
    with np.errstate(divide="ignore"):
        balanced = compute_class_weight("balanced", classes=np.unique(y), y=y, sample_weight=s)
    assert np.isinf(balanced[-1])
    balanced[-1] = 0.0
    coef, _ = sklearn_fit(
        X, y, C=1.0, l1_ratio=0.0, fit_intercept=False, sample_weight=s * balanced[y]
    )
    assert model.converged_
    assert_same_model(model, coef, np.zeros(model.intercept_.shape), 1e-6)
