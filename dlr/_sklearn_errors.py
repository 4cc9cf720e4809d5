"""dlr's errors that are also scikit-learn's, apart from :mod:`dlr.errors` because importing
scikit-learn takes a second or more, which the command line and ``import dlr`` do not pay."""

from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from dlr.errors import DlrError


class NotFittedError(DlrError, SklearnNotFittedError):
    """A model was used before ``fit`` (also scikit-learn's NotFittedError)."""
