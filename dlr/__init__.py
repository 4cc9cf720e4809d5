"""dlr: out-of-core logistic regression over chunked zarr arrays, computed by dask.

``import dlr`` is light (no scikit-learn, zarr, dask.array or scipy): the estimator and
``NotFittedError`` are loaded on first use, so ``dlr --version`` and a ``dask`` command line that
registers ``dask dlr`` start fast.
"""

import importlib

from dlr._version import __version__ as __version__
from dlr.errors import DataError, DlrError, InvalidParameterError, ModelError

#: Public names loaded on first use, and the module that holds each.
_LAZY = {
    "LogisticRegression": "dlr.estimator",
    "load": "dlr.estimator",
    "NotFittedError": "dlr._sklearn_errors",
    "export_onnx": "dlr.export",
}

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


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
