"""Model files: a directory of JSON metadata and ``.npy`` arrays, written atomically.

    MODEL/
      model.json      format, dlr version, hyperparameters, data fingerprint, n_iter, loss history
      coef.npy        (1, n_features) for two classes, (K, n_features) for K ≥ 3; float64
      intercept.npy   (1,) or (K,) float64

Arrays load with ``allow_pickle=False`` and the JSON is plain data: loading never runs code.
"""

import json
import os

import numpy as np

from dlr.atomic import staged
from dlr.errors import ModelError

FORMAT = "dlr-model"
FORMAT_VERSION = 1
ARRAYS = ("coef", "intercept")


def save_model(path: str, meta: dict, arrays: dict[str, np.ndarray], *, overwrite: bool = True):
    """Write ``meta`` (JSON-able) and ``arrays`` as a model directory at ``path``, atomically."""
    from dlr import __version__

    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "dlr_version": __version__, **meta}
    try:
        with staged(path, overwrite=overwrite) as tmp:
            os.makedirs(tmp)
            for name in ARRAYS:
                np.save(
                    os.path.join(tmp, f"{name}.npy"),
                    np.asarray(arrays[name], dtype=np.float64),
                    allow_pickle=False,
                )
            with open(os.path.join(tmp, "model.json"), "w") as f:
                json.dump(doc, f, indent=2, allow_nan=False)
                f.write("\n")
    except FileExistsError:
        raise ModelError(f"'{path}' exists; choose another path or allow overwriting") from None


def load_model(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a model directory; raises :class:`ModelError` naming what is missing or damaged."""
    meta_path = os.path.join(path, "model.json")
    if not os.path.isfile(meta_path):
        raise ModelError(f"no dlr model at '{path}' (no model.json)")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"'{meta_path}' is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"'{meta_path}' is not a dlr model file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"'{path}' has model format version {meta.get('format_version')}; "
            f"this dlr reads version {FORMAT_VERSION}"
        )
    arrays = {}
    for name in ARRAYS:
        file = os.path.join(path, f"{name}.npy")
        try:
            arrays[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot read '{file}': {e}") from None
    n, k = meta.get("n_features_in"), len(meta.get("classes", ()))
    rows = 1 if k == 2 else k
    if arrays["coef"].shape != (rows, n) or arrays["intercept"].shape != (rows,):
        raise ModelError(
            f"'{path}' is inconsistent: coef {arrays['coef'].shape}, intercept "
            f"{arrays['intercept'].shape}, n_features_in {n}"
        )
    return meta, arrays
