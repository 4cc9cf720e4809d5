"""The exceptions dlr raises for problems a user can fix.

Every message names what is wrong and where (file, array, chunk, sample range) so the CLI can
print it as one line and exit non-zero without a traceback.

``NotFittedError`` (also scikit-learn's) is imported from here as well, but lives in
:mod:`dlr._sklearn_errors`, loaded on first use: this module imports nothing.
"""


class DlrError(Exception):
    """Base class of every error dlr reports to its users."""


class InvalidParameterError(DlrError, ValueError):
    """A hyperparameter is out of its range or of the wrong type (also a ValueError, as
    scikit-learn's ``InvalidParameterError``)."""


class DataError(DlrError, ValueError):
    """The data is missing, malformed, or holds values dlr cannot train on."""


class DataTypeError(DataError, TypeError):
    """In-memory input of a kind dlr cannot read as numbers (sparse matrices, objects)."""


class ModelError(DlrError, ValueError):
    """A model file is missing, damaged, or does not fit the data it is applied to."""


def __getattr__(name: str):
    if name == "NotFittedError":
        from dlr._sklearn_errors import NotFittedError

        return NotFittedError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
