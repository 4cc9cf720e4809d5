"""dlr: out-of-core logistic regression over chunked zarr arrays, computed by dask."""

__version__ = "0.1.0"

from dlr.errors import (  # noqa: E402
    DataError,
    DlrError,
    InvalidParameterError,
    ModelError,
    NotFittedError,
)
from dlr.estimator import LogisticRegression, load  # noqa: E402
from dlr.export import export_onnx  # noqa: E402

__all__ = [
    "DataError",
    "DlrError",
    "InvalidParameterError",
    "LogisticRegression",
    "ModelError",
    "NotFittedError",
    "export_onnx",
    "load",
]
