"""Model files: a directory (or object-store prefix) of JSON metadata and ``.npy`` arrays.

    MODEL/
      model.json      format, dlr version, hyperparameters, data fingerprint, n_iter, loss
                      history, and the file name and sha256 of every array
      coef.npy        (1, n_features) for two classes, (K, n_features) for K ≥ 3; float64
      intercept.npy   (1,) or (K,) float64

Arrays load with ``allow_pickle=False`` and the JSON is plain data: loading never runs code.
Checksums make a damaged file an error. A local model is written under a temporary name,
fsynced and renamed into place. On object storage, which has no rename, the arrays get fresh
names and ``model.json`` — one atomic PUT — is written last: it is the pointer that switches a
reader from the old model to the new one, and the old arrays are deleted after it.
"""

import hashlib
import io
import json
import os
import uuid

import fsspec
import numpy as np

from dlr.atomic import is_local, staged
from dlr.errors import ModelError

FORMAT = "dlr-model"
FORMAT_VERSION = 1
ARRAYS = ("coef", "intercept")


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float64), allow_pickle=False)
    return buffer.getvalue()


def save_model(
    path: str,
    meta: dict,
    arrays: dict[str, np.ndarray],
    *,
    overwrite: bool = True,
    storage_options: dict | None = None,
) -> None:
    """Write ``meta`` (JSON-able) and ``arrays`` as the model at ``path`` (see the module)."""
    from dlr import __version__

    suffix = "" if is_local(path) else f"-{uuid.uuid4().hex[:12]}"
    blobs = {f"{name}{suffix}.npy": _npy(arrays[name]) for name in ARRAYS}
    files = {name: f"{name}{suffix}.npy" for name in ARRAYS}
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dlr_version": __version__,
        **meta,
        "arrays": {
            n: {"file": f, "sha256": hashlib.sha256(blobs[f]).hexdigest()} for n, f in files.items()
        },
    }
    blobs["model.json"] = (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode()
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


def load_model(
    path: str, storage_options: dict | None = None
) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a model; raises :class:`ModelError` naming what is missing or damaged.

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
    arrays = {}
    for name in ARRAYS:
        entry = meta.get("arrays", {}).get(name, {"file": f"{name}.npy"})
        file = f"{path}/{entry['file']}"
        try:
            data = fs.cat_file(f"{root}/{entry['file']}")
            if "sha256" in entry and hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise ValueError("the file does not match the checksum in model.json")
            arrays[name] = np.load(io.BytesIO(data), allow_pickle=False)
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


def model_exists(path: str, storage_options: dict | None = None) -> bool:
    """Whether a model (or anything) is already at ``path``."""
    if is_local(path):
        return os.path.exists(path)
    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    return fs.exists(f"{root}/model.json")
