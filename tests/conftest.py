"""Shared fixtures and the tolerance helper every comparison with the oracle uses."""

import numpy as np
import pytest
import zarr

from dlr.synthetic import make_dataset

#: float64 engines must match the float64 oracle to this relative error (the project's standard).
RTOL_FLOAT64 = 1e-10


def relative_error(actual, expected) -> float:
    """‖actual − expected‖ / ‖expected‖ over all entries (robust to entries near zero)."""
    actual = np.ravel(np.asarray(actual, dtype=np.float64))
    expected = np.ravel(np.asarray(expected, dtype=np.float64))
    assert actual.shape == expected.shape
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def assert_matches(actual, expected, rtol=RTOL_FLOAT64):
    err = relative_error(actual, expected)
    assert err <= rtol, f"relative error {err:.3e} exceeds {rtol:.1e}"


def load_arrays(path):
    """The whole dataset in memory, in the oracle's layout: X (n, m) and Y (1, m), X's dtype."""
    group = zarr.open_group(str(path), mode="r")
    x = group["X"]
    X = x[:] if x.metadata.dimension_names == ("feature", "sample") else x[:].T
    return X, group["y"][:][None, :].astype(X.dtype)


@pytest.fixture
def dataset(tmp_path):
    """Factory: ``dataset(n_samples, n_features, chunk_samples, layout=..., dtype=...)`` → path."""

    def make(
        n_samples=203,
        n_features=5,
        chunk_samples=50,
        *,
        samples_first=True,
        dtype="float64",
        seed=0,
    ):
        path = (
            tmp_path
            / f"d-{n_samples}-{n_features}-{chunk_samples}-{samples_first}-{dtype}-{seed}.zarr"
        )
        if path.exists():
            return str(path)
        make_dataset(
            str(path),
            n_samples,
            n_features,
            chunk_samples=chunk_samples,
            samples_first=samples_first,
            dtype=dtype,
            seed=seed,
        )
        return str(path)

    return make
