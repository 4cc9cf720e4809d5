"""Synthetic datasets with known true weights, written chunk by chunk (they may exceed RAM)."""

import numpy as np
import zarr

from dlr.atomic import staged_url
from dlr.dataset import create_arrays
from dlr.errors import DlrError
from dlr.numerics import sigmoid


def true_weights(n_features: int, seed: int) -> tuple[np.ndarray, float]:
    """w (n,) and b of the generating model: logits of standard-normal samples have std ≈ 2."""
    rng = np.random.default_rng([seed, 0])
    return rng.standard_normal(n_features) * 2.0 / np.sqrt(n_features), float(rng.normal(0, 0.5))


def make_chunk(start: int, stop: int, w: np.ndarray, b: float, seed: int, dtype):
    """Samples [start, stop): X (k, n) standard normal in ``dtype``, y (k,) uint8 drawn as
    Bernoulli(σ(wᵀx + b)).

    Each chunk has its own random stream, so chunks can be generated in any order.
    """
    rng = np.random.default_rng([seed, 1, start])
    x = rng.standard_normal((stop - start, w.shape[0]), dtype=np.float64).astype(dtype)
    p = sigmoid(x.astype(np.float64) @ w + b)
    y = (rng.random(stop - start) < p).astype(np.uint8)
    return x, y


def make_dataset(
    url: str,
    n_samples: int,
    n_features: int,
    *,
    chunk_samples: int,
    samples_first: bool = True,
    dtype: str = "float32",
    seed: int = 0,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> dict:
    """Write a synthetic dataset at ``url``; returns its attributes (true weights included).

    Local datasets are written under a temporary name and renamed when complete.
    """
    for name, value in (
        ("n_samples", n_samples),
        ("n_features", n_features),
        ("chunk_samples", chunk_samples),
    ):
        if value < 1:
            raise DlrError(f"{name} must be at least 1, got {value}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise DlrError(f"dtype must be float32 or float64, got {dtype}")
    w, b = true_weights(n_features, seed)
    attrs = {
        "dlr": {
            "format": "dlr-dataset",
            "version": 1,
            "generator": "dlr make-data",
            "seed": seed,
            "true_coef": w.tolist(),
            "true_intercept": b,
        }
    }
    try:
        with staged_url(url, overwrite=overwrite, storage_options=storage_options) as target:
            group = zarr.open_group(
                target, mode="w", storage_options=storage_options, attributes=attrs
            )
            xa, ya = create_arrays(
                group,
                n_samples,
                n_features,
                chunk_samples,
                samples_first=samples_first,
                dtype=dtype,
            )
            for start in range(0, n_samples, chunk_samples):
                stop = min(start + chunk_samples, n_samples)
                x, y = make_chunk(start, stop, w, b, seed, dtype)
                if samples_first:
                    xa[start:stop] = x
                else:
                    xa[:, start:stop] = x.T
                ya[start:stop] = y
    except FileExistsError:
        raise DlrError(f"'{url}' exists; choose another path or pass --overwrite") from None
    return attrs["dlr"]
