"""Model files: a directory (or object-store prefix) of JSON metadata and ``.npy`` arrays.

    MODEL/
      model.json      format, dlr version, the estimator's hyperparameters (``params``, and
                      ``class_weight`` on its own), every other fitted attribute of
                      :class:`FittedModel` under its name without the trailing underscore
                      (``data`` for the data fingerprint), and the file name and sha256 of each
                      array below
      coef.npy        (1, n_features) for two classes, (K, n_features) for K ≥ 3; float64
      intercept.npy   (1,) or (K,) float64
      lbfgs_memory.npy  optional: (2, q, rows, n_features + 1) float64, L-BFGS's final q
                      correction pairs, for a warm start to carry on with (see
                      :attr:`FittedModel.lbfgs_memory_`); absent for other solvers and in
                      models written before dlr saved it

model.json is plain JSON (:func:`dlr.serial.to_plain`, exact floats); a fitted attribute stored
as a list is read back as an array, and ``class_weight`` keys that are integers in decimal
as integers. Arrays load with ``allow_pickle=False``: loading never runs code. Checksums make a
damaged file an error. A local model is
written under a temporary name, fsynced and renamed into place. On object storage, which has no
rename, the arrays get fresh names and ``model.json`` — one atomic PUT — is written last: it is
the pointer that switches a reader from the old model to the new one, and the old arrays are
deleted after it.
"""

import json
import os
import uuid
from typing import NamedTuple

import fsspec
import numpy as np

from dlr import serial
from dlr.atomic import is_local, staged
from dlr.errors import ModelError

FORMAT = "dlr-model"
FORMAT_VERSION = 1


class FittedModel(NamedTuple):
    """What a fit learns: the fitted attributes ``fit`` sets, ``save`` writes and ``load`` reads.

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) for two classes, (K, n_features) for K ≥ 3
        The weights, on the original feature scale.
    intercept_ : ndarray of shape (1,) or (K,)
        The intercepts (zeros without ``fit_intercept``).
    classes_ : ndarray of shape (K,)
        The class labels, sorted.
    n_features_in_ : int
        Features seen in training.
    solver_ : str
        The solver used (``"auto"`` resolved).
    n_iter_ : ndarray of shape (1,), int32
        Iterations run (as scikit-learn's; model.json holds the number).
    n_passes_ : int
        Passes over the training data, the first (validating, summarizing) pass included.
    converged_ : bool
        Whether the solver met ``tol``.
    loss_history_ : ndarray of shape (n_iter_ + 1,)
        F at each iterate, the starting point included.
    grad_norm_history_ : ndarray of shape (n_iter_,)
        The optimality measure max |∇F| after each iteration.
    validation_loss_history_ : ndarray of shape (n_iter_ + 1,) or None
        The validation loss at each iterate; None (the attribute is not set) without
        validation data.
    data_fingerprint_ : dict
        What the training data was: its kind, shape, dtype and, for zarr, its URL and chunking.
    lbfgs_memory_ : ndarray of shape (2, q, rows, n_features + 1) or None
        L-BFGS's memory at the end of the fit, on the original feature scale (the layout of
        ``[coef_ | intercept_]``, rows 1 or K): ``[0]`` the last q point differences s,
        ``[1]`` the matching gradient differences y of the objective, oldest first. A fit
        started from this model (``init=``) with the same solver continues with it (see
        :mod:`dlr.warm`). None for the other solvers, and when there is no pair.
    """

    coef_: np.ndarray
    intercept_: np.ndarray
    classes_: np.ndarray
    n_features_in_: int
    solver_: str
    n_iter_: np.ndarray
    n_passes_: int
    converged_: bool
    loss_history_: np.ndarray
    grad_norm_history_: np.ndarray
    validation_loss_history_: np.ndarray | None
    data_fingerprint_: dict
    lbfgs_memory_: np.ndarray | None = None


#: Fitted attributes stored as ``.npy`` files (the rest are in model.json).
ARRAYS = ("coef_", "intercept_")
#: ... and those stored so only when set (a model without one loads it as None).
OPTIONAL_ARRAYS = ("lbfgs_memory_",)
#: model.json keys that are not the attribute's name without its trailing underscore.
KEYS = {"data_fingerprint_": "data"}
#: Attributes that are arrays of shape (1,) (as scikit-learn's) written as their one number.
ONE_NUMBER = {"n_iter_": np.int32}


def _key(name: str) -> str:
    return KEYS.get(name, name.rstrip("_"))


def fitted_of(model) -> FittedModel:
    """The fitted attributes of ``model`` (None for an attribute it does not have)."""
    return FittedModel(*(getattr(model, name, None) for name in FittedModel._fields))


def set_fitted(model, fitted: FittedModel) -> None:
    """Set each fitted attribute on ``model``; one that is None is left unset (and removed if an
    earlier fit had set it)."""
    for name, value in fitted._asdict().items():
        if value is not None:
            setattr(model, name, value)
        elif hasattr(model, name):
            delattr(model, name)


def save_model(
    path: str,
    params: dict,
    fitted: FittedModel,
    *,
    overwrite: bool = True,
    storage_options: dict | None = None,
) -> None:
    """Write the estimator's ``params`` and its ``fitted`` attributes as the model at ``path``."""
    from dlr import __version__

    suffix = "" if is_local(path) else f"-{uuid.uuid4().hex[:12]}"
    stored = [n for n in ARRAYS + OPTIONAL_ARRAYS if getattr(fitted, n) is not None]
    files = {name: f"{_key(name)}{suffix}.npy" for name in stored}
    blobs = {
        files[name]: serial.npy_bytes(np.asarray(getattr(fitted, name), dtype=np.float64))
        for name in stored
    }
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dlr_version": __version__,
        "estimator": "LogisticRegression",
        "params": serial.to_plain({k: v for k, v in params.items() if k != "class_weight"}),
        "class_weight": serial.to_plain(params.get("class_weight")),
        **{
            _key(name): serial.to_plain(value[0] if name in ONE_NUMBER else value)
            for name, value in fitted._asdict().items()
            if name not in ARRAYS + OPTIONAL_ARRAYS
        },
        "arrays": {
            _key(n): {"file": f, "sha256": serial.sha256(blobs[f])} for n, f in files.items()
        },
    }
    blobs["model.json"] = serial.json_bytes(doc)
    if is_local(path):
        try:
            with staged(path, overwrite=overwrite) as tmp:
                os.makedirs(tmp)
                for file, data in blobs.items():
                    with open(os.path.join(tmp, file), "wb") as f:
                        f.write(data)
        except FileExistsError:
            raise ModelError(f"'{path}' exists; choose another path or allow overwriting") from None
        return
    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    if fs.exists(f"{root}/model.json") and not overwrite:
        raise ModelError(f"'{path}' exists; choose another path or allow overwriting")
    old = set(fs.ls(root, detail=False)) if fs.exists(root) else set()
    for file, data in blobs.items():
        if file != "model.json":
            fs.pipe_file(f"{root}/{file}", data)
    fs.pipe_file(f"{root}/model.json", blobs["model.json"])
    stale = [p for p in old if p.rstrip("/").rsplit("/", 1)[-1] not in blobs]
    if stale:
        fs.rm(stale)


def load_model(path: str, storage_options: dict | None = None) -> tuple[dict, FittedModel]:
    """The estimator's params and the fitted attributes of the model at ``path``; raises
    :class:`ModelError` naming what is missing or damaged.

    ``path`` may also name a registry version: ``REG@champion``, ``REG@7`` (dlr.registry).
    """
    from dlr.registry import resolve_model_path

    path = resolve_model_path(path, storage_options)
    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    meta_path = f"{root}/model.json"
    try:
        raw = fs.cat_file(meta_path)
    except (FileNotFoundError, IsADirectoryError):
        raise ModelError(f"no dlr model at '{path}' (no model.json)") from None
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"'{path}/model.json' is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"'{path}/model.json' is not a dlr model file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"'{path}' has model format version {meta.get('format_version')}; "
            f"this dlr reads version {FORMAT_VERSION}"
        )
    values = {}
    arrays = meta.get("arrays", {})
    for name in ARRAYS + OPTIONAL_ARRAYS:
        key = _key(name)
        if name in OPTIONAL_ARRAYS and key not in arrays:
            values[name] = None
            continue
        entry = arrays.get(key, {"file": f"{key}.npy"})
        file = f"{path}/{entry['file']}"
        try:
            data = fs.cat_file(f"{root}/{entry['file']}")
            if "sha256" in entry and serial.sha256(data) != entry["sha256"]:
                raise ValueError("the file does not match the checksum in model.json")
            values[name] = serial.read_npy(data)
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot read '{file}': {e}") from None
    for name in FittedModel._fields:
        if name not in ARRAYS + OPTIONAL_ARRAYS:
            value = serial.from_plain(meta.get(_key(name)))
            if name in ONE_NUMBER:
                value = np.array([value], dtype=ONE_NUMBER[name])
            values[name] = np.array(value) if isinstance(value, list) else value
    fitted = FittedModel(**values)
    params = {k: _legacy_float(v) for k, v in serial.from_plain(meta.get("params", {})).items()}
    class_weight = serial.from_plain(meta.get("class_weight"))
    if isinstance(class_weight, dict):
        class_weight = {_label(k): v for k, v in class_weight.items()}
    params["class_weight"] = class_weight
    n, k = fitted.n_features_in_, len(fitted.classes_ if fitted.classes_ is not None else ())
    rows = 1 if k == 2 else k
    if fitted.coef_.shape != (rows, n) or fitted.intercept_.shape != (rows,):
        raise ModelError(
            f"'{path}' is inconsistent: coef {fitted.coef_.shape}, intercept "
            f"{fitted.intercept_.shape}, n_features_in {n}"
        )
    memory = fitted.lbfgs_memory_
    if memory is not None and (
        memory.ndim != 4 or memory.shape[0] != 2 or memory.shape[2:] != (rows, n + 1)
    ):
        raise ModelError(
            f"'{path}' is inconsistent: lbfgs_memory {memory.shape}, expected "
            f"(2, q, {rows}, {n + 1})"
        )
    return params, fitted


def _legacy_float(value):
    """Models written before floats were encoded exactly stored infinite hyperparameters (C)
    as the strings "inf" and "-inf"; no string hyperparameter takes those values."""
    return float(value) if value in ("inf", "-inf") else value


def _label(key: str):
    """A class_weight key read back: JSON keys are strings; integer labels were integers."""
    return int(key) if key.lstrip("-").isdigit() else key


def model_exists(path: str, storage_options: dict | None = None) -> bool:
    """Whether a model (or anything) is already at ``path``."""
    if is_local(path):
        return os.path.exists(path)
    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    return fs.exists(f"{root}/model.json")
