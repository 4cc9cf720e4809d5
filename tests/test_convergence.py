"""With default settings, dlr reaches scikit-learn's optimum on real, unscaled data.

scikit-learn's breast-cancer, digits (10 classes) and wine data and statsmodels' binary datasets
keep their raw feature scales (areas in the thousands next to ratios below 0.1, constant pixels,
collinear columns). Each is written to a zarr store with zarr's defaults and fitted from its
path with ``LogisticRegression()`` as it comes — no standardizing, no max_iter or tol — and must
come within 1e-6 of scikit-learn's optimal objective, fitted to tol 1e-12, with the same model: the
objective compared is scikit-learn's, C·Σ loss + ½‖W‖² on the original features. A
ConvergenceWarning is an error here (pyproject's pytest settings).
"""

import numpy as np
import pytest
import statsmodels.api as sm
import zarr
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from threadpoolctl import threadpool_limits

import dlr


def statsmodels_data(name: str, target: str, positive=None):
    data = getattr(sm.datasets, name).load_pandas().data
    y = data[target].to_numpy()
    return data.drop(columns=target).to_numpy(np.float64), (y > 0 if positive else y).astype(int)


DATASETS = {
    "breast-cancer": lambda: load_breast_cancer(return_X_y=True),
    "digits": lambda: load_digits(return_X_y=True),
    "wine": lambda: load_wine(return_X_y=True),
    "spector": lambda: statsmodels_data("spector", "GRADE"),
    "fair": lambda: statsmodels_data("fair", "affairs", positive=True),  # any affair
    "anes96": lambda: statsmodels_data("anes96", "vote"),
}


def objective(X, y, coef, intercept, C=1.0) -> float:
    """scikit-learn's objective C·Σ loss + ½‖W‖² (intercept unpenalized), in float64."""
    Z = X @ coef.T + intercept
    if coef.shape[0] == 1:
        loss = np.logaddexp(0.0, Z[:, 0]) - y * Z[:, 0]
    else:
        loss = np.logaddexp.reduce(Z, axis=1) - Z[np.arange(len(y)), y]
    return float(C * loss.sum() + 0.5 * (coef**2).sum())


def write(path, X, y, chunk=256) -> str:
    """A zarr group written with zarr's defaults (an all-zero label chunk is not stored)."""
    group = zarr.open_group(str(path), mode="w")
    group.create_array("X", data=X, chunks=(chunk, X.shape[1]))
    group.create_array("y", data=y, chunks=(chunk,))
    return str(path)


@pytest.mark.parametrize("name", DATASETS)
def test_default_settings_reach_scikit_learns_optimum_on_unscaled_data(name, tmp_path):
    X, y = DATASETS[name]()
    with threadpool_limits(1):  # scikit-learn's Newton is slow with BLAS threads on 2 cores
        sk = SkLogisticRegression(solver="newton-cholesky", tol=1e-12, max_iter=1000).fit(X, y)
    model = dlr.LogisticRegression().fit(write(tmp_path / "data.zarr", X, y))
    optimum = objective(X, y, sk.coef_, sk.intercept_)
    gap = (objective(X, y, model.coef_, model.intercept_) - optimum) / optimum
    assert gap <= 1e-6, f"relative objective gap {gap:.1e} from scikit-learn's optimum"
    assert model.converged_
    intercept = sk.intercept_ - sk.intercept_.mean() if len(sk.classes_) > 2 else sk.intercept_
    ours = np.column_stack([model.coef_, model.intercept_])
    theirs = np.column_stack([sk.coef_, intercept])  # softmax intercepts centred, as dlr's
    distance = np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)
    assert distance <= 1e-3, f"coefficients {distance:.1e} (relative) from scikit-learn's"
