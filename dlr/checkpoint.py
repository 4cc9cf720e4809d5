"""Checkpoints: the whole state of a training run, written atomically, resumed bit-identically.

A checkpoint directory holds one sub-directory per saved iteration and a pointer to the newest:

    CHECKPOINTS/
      LATEST                       {"checkpoint": "ckpt-00000012-<id>"}
      ckpt-00000012-<id>/
        state.json                 the run's metadata, the state's structure and its scalars
        <field>.npy                every array of the state (loaded with allow_pickle=False)
        manifest.json              sha256 of every file above, written last

Local checkpoints are written under a temporary name, fsynced and renamed; on object storage
(no rename) every checkpoint has its own never-reused keys and becomes current only when the
pointer object is rewritten after it. Loading verifies the checksums and falls back, with a
warning naming it, from a damaged checkpoint to the one before. Only the last ``keep`` are kept.
The encoding (:func:`dlr.serial.encode`) keeps every bit; only the named tuples given to the
store as ``types`` are rebuilt when loading.
"""

import json
import logging
import os
import uuid
import warnings
from typing import NamedTuple

import fsspec
import numpy as np

from dlr import serial
from dlr.atomic import FULL, fsync_dir, fsync_tree, is_local, local_path, publish, remove
from dlr.errors import DlrError

log = logging.getLogger("dlr")

FORMAT = "dlr-checkpoint"
FORMAT_VERSION = 2


class CheckpointWarning(UserWarning):
    """A checkpoint was damaged and skipped."""


class Checkpoint(NamedTuple):
    """A checkpoint as read back: its ``name`` in the store, the ``iteration`` it was saved at,
    the run's ``meta`` data (what the run is: settings and data) and its ``state``."""

    name: str
    iteration: int
    meta: dict
    state: object


class CheckpointStore:
    """The checkpoints of one training run in a directory or object-store prefix ``url``.

    ``types`` are the named tuples a saved state may contain (the run state, the solver
    states, the evaluation); loading rebuilds those and nothing else.
    """

    def __init__(
        self,
        url: str,
        *,
        keep: int = 3,
        storage_options: dict | None = None,
        types: tuple[type, ...] = (),
    ):
        if keep < 1:
            raise DlrError(f"keep at least 1 checkpoint, got {keep}")
        self.url, self.keep = url, keep
        self.types = {cls.__name__: cls for cls in types}
        self.fs, self.root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.local = is_local(url)

    def save(self, iteration: int, meta: dict, state) -> str:
        """Write ``state`` (an encodable value: the run state) with the run's ``meta`` data as
        the checkpoint of ``iteration``; return its name."""
        arrays: dict[str, np.ndarray] = {}
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "iteration": iteration,
            "meta": serial.encode(meta, None, "meta"),
            "state": serial.encode(state, arrays, "state", self.types),
        }
        files = {name: serial.npy_bytes(a) for name, a in arrays.items()}
        files["state.json"] = json.dumps(doc, allow_nan=False).encode()
        manifest = {name: serial.sha256(data) for name, data in files.items()}
        files["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
        name = f"ckpt-{iteration:08d}-{uuid.uuid4().hex[:8]}"
        try:
            if self.local:
                self._write_local(name, files)
            else:
                for file, data in files.items():
                    self.fs.pipe_file(f"{self.root}/{name}/{file}", data)
            self._write_pointer(name)
        except OSError as e:
            if e.errno not in FULL:
                raise
            raise DlrError(
                f"cannot write checkpoint '{self.url.rstrip('/')}/{name}': {e.strerror}"
            ) from None
        self._prune()
        return name

    def _write_local(self, name: str, files: dict[str, bytes]) -> None:
        root = local_path(self.root)
        os.makedirs(root, exist_ok=True)
        tmp = os.path.join(root, f".{name}.tmp")
        try:
            os.makedirs(tmp)
            for file, data in files.items():
                with open(os.path.join(tmp, file), "wb") as f:
                    f.write(data)
            fsync_tree(tmp)
            publish(tmp, os.path.join(root, name))
        except BaseException:
            remove(tmp)
            raise

    def _write_pointer(self, name: str) -> None:
        data = json.dumps({"checkpoint": name}).encode()
        if not self.local:
            self.fs.pipe_file(f"{self.root}/LATEST", data)
            return
        root = local_path(self.root)
        tmp = os.path.join(root, f".LATEST.{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(root, "LATEST"))
        except BaseException:
            remove(tmp)
            raise
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

    def load_latest(self) -> Checkpoint | None:
        """The newest intact checkpoint, or None if there is none.

        A damaged checkpoint (missing file, checksum mismatch, unreadable) is skipped with a
        :class:`CheckpointWarning` naming it.
        """
        for name in self.names():
            try:
                return self._read(name)
            except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
                warnings.warn(
                    f"checkpoint '{self.url}/{name}' is damaged ({e}); falling back to the one "
                    "before it",
                    CheckpointWarning,
                    stacklevel=2,
                )
        return None

    def _read(self, name: str) -> Checkpoint:
        base = f"{self.root}/{name}"
        manifest = json.loads(self.fs.cat_file(f"{base}/manifest.json"))
        blobs = {
            file: serial.check_digest(self.fs.cat_file(f"{base}/{file}"), digest, file)
            for file, digest in manifest.items()
        }
        doc = json.loads(blobs.pop("state.json"))
        if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
            raise ValueError("not a dlr checkpoint of this version")
        arrays = {f: serial.read_npy(d) for f, d in blobs.items()}
        state = serial.decode(doc["state"], arrays, self.types)
        return Checkpoint(name, doc["iteration"], serial.decode(doc["meta"]), state)


def check_compatible(saved: dict, current: dict, where: str) -> None:
    """Refuse to resume when the settings or the data of the run differ, naming what differs.

    ``saved`` and ``current`` are run metadata: ``start``, the digest of the initial weights
    (compared when the checkpoint has it), sections ``params``, ``data`` and ``validation`` of
    fields compared one by one, and ``content``, per data set its ``origin`` and ``chunks``, a
    list of [start, stop, digest] whose first differing entry is named.
    """
    current = serial.decode(serial.encode(current, None, "meta"))  # the types a file gives back
    start = saved.get("start")  # absent in checkpoints of dlr before it was recorded
    if start is not None and start != current.get("start"):
        raise DlrError(
            f"cannot resume from {where}: that fit started from other initial weights (another "
            "--init model, or none); resume with the init it started from, or start afresh "
            "without --resume"
        )
    for section in ("params", "data", "validation"):
        old, new = saved.get(section) or {}, current.get(section) or {}
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                raise DlrError(
                    f"cannot resume from {where}: {section}.{key} was {old.get(key)!r} there and "
                    f"is {new.get(key)!r} now; resume with the same data and settings, or start "
                    "afresh without --resume"
                )
    for section, new in (current.get("content") or {}).items():
        old = (saved.get("content") or {}).get(section) or {}
        for i, (chunk, before) in enumerate(
            zip(new["chunks"], old.get("chunks", []), strict=False)
        ):
            if chunk != before:
                start, stop, _ = chunk
                raise DlrError(
                    f"cannot resume from {where}: chunk {i} of {new['origin']} (samples "
                    f"{start}–{stop - 1}) holds other values than the {section} data the "
                    "checkpoint was written for (its first-pass summary differs); resume on the "
                    "same data, or start afresh without --resume"
                )
