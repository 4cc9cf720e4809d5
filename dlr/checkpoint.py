"""Checkpoints: the complete solver state of a fit, written atomically, resumed bit-identically.

A checkpoint directory holds one sub-directory per saved iteration and a pointer to the newest:

    CHECKPOINTS/
      LATEST                       {"checkpoint": "ckpt-00000012-<id>"}
      ckpt-00000012-<id>/
        state.json                 the state's structure, scalars and the run's metadata
        <field>.npy                every array of the state (loaded with allow_pickle=False)
        manifest.json              sha256 of every file above, written last

Local checkpoints are written under a temporary name, fsynced and renamed; on object storage
(no rename) every checkpoint has its own never-reused keys and becomes current only when the
pointer object is rewritten after it. Loading verifies the checksums and falls back, with a
warning naming it, from a damaged checkpoint to the one before. Only the last ``keep`` are kept.
"""

import hashlib
import io
import json
import logging
import os
import uuid
import warnings

import fsspec
import numpy as np

from dlr.atomic import fsync_dir, fsync_tree, is_local, local_path, publish
from dlr.errors import DlrError
from dlr.objective import Evaluation
from dlr.solvers.gd import GDState
from dlr.solvers.lbfgs import LbfgsState
from dlr.solvers.newton import NewtonState

log = logging.getLogger("dlr")

FORMAT = "dlr-checkpoint"
FORMAT_VERSION = 1
#: The only types a checkpoint can rebuild: loading never runs code from the file.
NAMED_TUPLES = {cls.__name__: cls for cls in (GDState, NewtonState, LbfgsState, Evaluation)}


class CheckpointWarning(UserWarning):
    """A checkpoint was damaged and skipped."""


def encode(value, arrays: dict[str, np.ndarray], path: str = "state"):
    """JSON-able structure of ``value``; its arrays go to ``arrays`` under file names.

    Floats are stored as hex strings, so every bit survives (inf and nan included).
    """
    if isinstance(value, np.ndarray):
        name = f"{path}.npy"
        arrays[name] = value
        return {"array": name}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        if type(value).__name__ not in NAMED_TUPLES:
            raise TypeError(f"cannot checkpoint a {type(value).__name__}")
        fields = {f: encode(v, arrays, f"{path}.{f}") for f, v in value._asdict().items()}
        return {"namedtuple": type(value).__name__, "fields": fields}
    if isinstance(value, tuple | list):
        return {"tuple": [encode(v, arrays, f"{path}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        return {"dict": {k: encode(v, arrays, f"{path}.{k}") for k, v in value.items()}}
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return {"float": float(value).hex()}
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot checkpoint a value of type {type(value).__name__}")


def decode(doc, arrays: dict[str, np.ndarray]):
    """Inverse of :func:`encode`."""
    if not isinstance(doc, dict):
        return doc
    if "array" in doc:
        return arrays[doc["array"]]
    if "namedtuple" in doc:
        cls = NAMED_TUPLES[doc["namedtuple"]]
        return cls(**{f: decode(v, arrays) for f, v in doc["fields"].items()})
    if "tuple" in doc:
        return tuple(decode(v, arrays) for v in doc["tuple"])
    if "dict" in doc:
        return {k: decode(v, arrays) for k, v in doc["dict"].items()}
    if "float" in doc:
        return float.fromhex(doc["float"])
    raise ValueError(f"unknown checkpoint entry {sorted(doc)}")


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


class CheckpointStore:
    """The checkpoints of one training run in a directory or object-store prefix ``url``."""

    def __init__(self, url: str, *, keep: int = 3, storage_options: dict | None = None):
        if keep < 1:
            raise DlrError(f"keep at least 1 checkpoint, got {keep}")
        self.url, self.keep = url, keep
        self.fs, self.root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.local = is_local(url)

    def save(self, iteration: int, payload: dict) -> str:
        """Write ``payload`` (solver state, run metadata, ...) as the checkpoint of
        ``iteration``; return its name."""
        arrays: dict[str, np.ndarray] = {}
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "iteration": iteration,
            "payload": encode(payload, arrays, "payload"),
        }
        files = {name: _npy_bytes(a) for name, a in arrays.items()}
        files["state.json"] = json.dumps(doc, allow_nan=False).encode()
        manifest = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        files["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
        name = f"ckpt-{iteration:08d}-{uuid.uuid4().hex[:8]}"
        if self.local:
            self._write_local(name, files)
        else:
            for file, data in files.items():
                self.fs.pipe_file(f"{self.root}/{name}/{file}", data)
        self._write_pointer(name)
        self._prune()
        return name

    def _write_local(self, name: str, files: dict[str, bytes]) -> None:
        root = local_path(self.root)
        os.makedirs(root, exist_ok=True)
        tmp = os.path.join(root, f".{name}.tmp")
        os.makedirs(tmp)
        for file, data in files.items():
            with open(os.path.join(tmp, file), "wb") as f:
                f.write(data)
        fsync_tree(tmp)
        publish(tmp, os.path.join(root, name))

    def _write_pointer(self, name: str) -> None:
        data = json.dumps({"checkpoint": name}).encode()
        if not self.local:
            self.fs.pipe_file(f"{self.root}/LATEST", data)
            return
        root = local_path(self.root)
        tmp = os.path.join(root, f".LATEST.{uuid.uuid4().hex[:8]}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(root, "LATEST"))
        fsync_dir(root)

    def names(self) -> list[str]:
        """Checkpoint names, newest first."""
        if not self.fs.exists(self.root):
            return []
        entries = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        return sorted((e for e in entries if e.startswith("ckpt-")), reverse=True)

    def _prune(self) -> None:
        for name in self.names()[self.keep :]:
            self.fs.rm(f"{self.root}/{name}", recursive=True)

    def load_latest(self) -> tuple[str, int, dict] | None:
        """(name, iteration, payload) of the newest intact checkpoint, or None if there is none.

        A damaged checkpoint (missing file, checksum mismatch, unreadable) is skipped with a
        :class:`CheckpointWarning` naming it.
        """
        for name in self.names():
            try:
                iteration, payload = self._read(name)
            except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
                warnings.warn(
                    f"checkpoint '{self.url}/{name}' is damaged ({e}); falling back to the one "
                    "before it",
                    CheckpointWarning,
                    stacklevel=2,
                )
                continue
            return name, iteration, payload
        return None

    def _read(self, name: str) -> tuple[int, dict]:
        base = f"{self.root}/{name}"
        manifest = json.loads(self.fs.cat_file(f"{base}/manifest.json"))
        blobs = {}
        for file, digest in manifest.items():
            data = self.fs.cat_file(f"{base}/{file}")
            if hashlib.sha256(data).hexdigest() != digest:
                raise ValueError(f"{file} does not match its checksum")
            blobs[file] = data
        doc = json.loads(blobs.pop("state.json"))
        if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
            raise ValueError("not a dlr checkpoint of this version")
        arrays = {f: np.load(io.BytesIO(d), allow_pickle=False) for f, d in blobs.items()}
        return doc["iteration"], decode(doc["payload"], arrays)


def check_compatible(saved: dict, current: dict, where: str) -> None:
    """Refuse to resume when the data or the hyperparameters of the run differ; name the field."""
    for section in ("params", "data", "validation"):
        old, new = saved.get(section) or {}, current.get(section) or {}
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                raise DlrError(
                    f"cannot resume from {where}: {section}.{key} was {old.get(key)!r} there and "
                    f"is {new.get(key)!r} now; resume with the same data and settings, or start "
                    "afresh without --resume"
                )
