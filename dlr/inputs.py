"""What a user passes to ``fit``, ``predict``, ... turned into a :class:`dlr.sources.Source`.

A dataset path or URL (its arrays named by ``x_name``, ``y_name`` and, optionally, a sample
weight array), NumPy, dask or zarr arrays (see :func:`dlr.sources.from_arrays`), or a Source.
In-memory labels that are not numbers (strings, objects) are encoded to their indices in the
sorted distinct labels, which decode them again.
"""

import numpy as np
import zarr

from dlr.dataset import open_dataset
from dlr.errors import DataError, DlrError
from dlr.sources import Source, from_arrays, from_dataset


def is_path(X) -> bool:
    """Whether ``X`` names a dataset (a string or path-like) rather than holding data."""
    return isinstance(X, str) or hasattr(X, "__fspath__")


def training_source(
    X, y, sample_weight, *, x_name: str, y_name: str, storage_options: dict | None
) -> tuple[Source, np.ndarray | None]:
    """The training source and, for in-memory non-numeric labels, the decoding table (K,)
    from label index to label (None otherwise)."""
    if y is None and not (is_path(X) or isinstance(X, Source)):
        raise DataError(
            "LogisticRegression requires y to be passed, but the target y is None "
            "(only a dataset path carries its own labels)"
        )
    decoded = None
    if isinstance(y, list | tuple | np.ndarray) and np.asarray(y).dtype.kind in "USO":
        decoded, y = np.unique(np.asarray(y), return_inverse=True)
    src = source(X, y, sample_weight, x_name=x_name, y_name=y_name, storage_options=storage_options)
    return src, decoded


def validation_source(
    data, decoded: np.ndarray | None, *, x_name: str, y_name: str, storage_options: dict | None
) -> Source:
    """The source of ``validation_data``: a dataset path or an (X, y) pair, with labels encoded
    by the training data's ``decoded`` table."""
    if isinstance(data, tuple) and len(data) == 2:
        Xv, yv = data
        if decoded is not None:
            yv = np.asarray(yv)
            codes = np.searchsorted(decoded, yv).clip(max=len(decoded) - 1)
            unseen = decoded[codes] != yv
            if unseen.any():
                first = int(np.flatnonzero(unseen)[0])
                raise DataError(
                    f"validation labels {np.unique(yv[unseen]).tolist()} were not seen in "
                    f"training (classes {decoded.tolist()}); first at validation sample {first}"
                )
            yv = codes
        return from_arrays(Xv, yv)
    return source(data, None, None, x_name=x_name, y_name=y_name, storage_options=storage_options)


def source(
    X,
    y=None,
    sample_weight=None,
    *,
    x_name: str = "X",
    y_name: str | None = "y",
    storage_options: dict | None = None,
) -> Source:
    """The source of a dataset path (``sample_weight`` then names one of its arrays), of
    arrays ``X`` (m, n), ``y`` (m,) and ``sample_weight`` (m,), or ``X`` itself if it is a
    Source."""
    if isinstance(X, Source):  # e.g. the committed spans of a registry (dlr.spanset)
        if y is not None or sample_weight is not None:
            raise DlrError("a Source carries its own labels and weights; pass it alone")
        return X
    if is_path(X):
        if y is not None:
            raise DlrError("pass either a dataset path, or arrays X and y, not a path and y")
        weight_name = sample_weight if isinstance(sample_weight, str) else None
        src = from_dataset(
            open_dataset(
                str(X),
                x=x_name,
                y=y_name,
                sample_weight=weight_name,
                storage_options=storage_options,
            )
        )
        if sample_weight is not None and weight_name is None:
            raise DlrError("with a dataset path, sample_weight names an array of the dataset")
        return src
    if isinstance(X, zarr.Group):
        raise DlrError("pass the dataset's path, or its arrays, rather than a zarr group")
    return from_arrays(X, y, sample_weight)
