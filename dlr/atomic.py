"""Publishing files and directories atomically: write under a temporary name, fsync, rename.

A reader (or a crash) sees either the previous complete version or the new complete one, never a
half-written file. Local paths only; callers writing to object storage clean up on failure instead.
"""

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

#: The errors of a write that found no room: the filesystem is full, or the user's quota is.
FULL = (errno.ENOSPC, errno.EDQUOT)


def is_local(url: str) -> bool:
    """True for plain paths and file:// URLs, False for other fsspec protocols (s3://, gs://...)."""
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


def fsync_tree(path: str) -> None:
    """fsync every file and directory under ``path`` (a file or a directory), then ``path``."""
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path, topdown=False):
            for name in files:
                fsync_file(os.path.join(root, name))
            for name in dirs:
                _fsync(os.path.join(root, name), os.O_RDONLY | os.O_DIRECTORY)
        _fsync(path, os.O_RDONLY | os.O_DIRECTORY)
    else:
        fsync_file(path)


def fsync_file(path: str) -> None:
    """fsync a file's data and metadata."""
    _fsync(path, os.O_RDONLY)


def fsync_dir(path: str) -> None:
    """fsync a directory, making the renames inside it durable."""
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


def _fsync(path: str, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def staged(target: str, *, overwrite: bool) -> Iterator[str]:
    """Yield a temporary sibling path to write ``target`` into; publish it only on success.

    On a clean exit the temporary tree is fsynced and renamed to ``target`` (an existing target is
    replaced only when ``overwrite``: moved aside, replaced, then deleted; for the instant between
    the two renames the complete old version is under its ``.old-`` name). On an exception the
    temporary tree is removed and ``target`` is
    untouched.
    """
    target = os.path.abspath(local_path(target))
    parent = os.path.dirname(target)
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(target)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(target)}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        yield tmp
        fsync_tree(tmp)
        publish(tmp, target)
    except BaseException:
        remove(tmp)
        raise


def publish(tmp: str, target: str) -> None:
    """Rename finished ``tmp`` to ``target``; an existing target is moved aside, then removed."""
    parent = os.path.dirname(target)
    if os.path.lexists(target):
        old = os.path.join(parent, f".{os.path.basename(target)}.old-{uuid.uuid4().hex[:12]}")
        os.rename(target, old)
        os.rename(tmp, target)
        _fsync(parent, os.O_RDONLY | os.O_DIRECTORY)
        remove(old)
    else:
        os.rename(tmp, target)
        _fsync(parent, os.O_RDONLY | os.O_DIRECTORY)


def remove(path: str) -> None:
    """Remove a file or directory tree if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextmanager
def staged_url(url: str, *, overwrite: bool, storage_options: dict | None = None) -> Iterator[str]:
    """:func:`staged` for local paths; for object storage (no rename there), yield ``url`` itself
    and delete whatever was written under it if the block fails."""
    if is_local(url):
        with staged(url, overwrite=overwrite) as tmp:
            yield tmp
        return
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if fs.exists(path) and not overwrite:
        raise FileExistsError(url)
    try:
        yield url
    except BaseException:
        if fs.exists(path):
            fs.rm(path, recursive=True)
        raise
