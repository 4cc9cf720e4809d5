"""The few storage operations a registry needs, on a local directory or an object-store prefix.

Every write publishes a complete object at once: locally a temporary file is fsynced and renamed
(or, for an exclusive create, hard-linked) into place; on object storage one PUT is atomic.

- **Exclusive create** (:meth:`Store.create`). Locally: ``link(2)`` of the complete, fsynced
  temporary file to the name. It fails with ``EEXIST`` if the name exists — the exclusivity of
  ``open(O_CREAT | O_EXCL)`` — and, unlike ``O_EXCL`` followed by a write, no reader ever sees
  the file empty or half-written. It is also the idiom open(2) gives for NFS, where ``O_EXCL``
  was unreliable (NFSv2, Linux before 2.6); as open(2) advises, a link reported as failed is
  checked with the temporary file's link count, since a retransmitted NFS request can report
  ``EEXIST`` for a link it made. It needs a filesystem with hard links (local ones, NFS). On S3:
  a PUT with ``If-None-Match: *``.
- **Compare-and-swap** (:meth:`Store.swap`). On S3: a PUT with ``If-Match: <ETag>``. Locally a
  rename cannot be conditional: it replaces unconditionally, and the registry's lease
  (:mod:`dlr.lease`) is what keeps a second writer out.
"""

import os
import socket
import uuid
from contextlib import contextmanager

import fsspec

from dlr.atomic import FULL, fsync_dir, is_local, local_path, remove
from dlr.errors import DlrError


class Conflict(Exception):
    """A conditional write lost: the object exists, or changed since it was read."""


class StorageFull(DlrError, OSError):
    """A registry write found no room (``ENOSPC``, ``EDQUOT``): one line naming the object.

    Also an ``OSError`` with the original ``errno`` and ``strerror``, so a caller that reports
    a failed write in its own words (``register_version``, ingest's commit) still can.
    """

    def __init__(self, url: str, error: OSError):
        OSError.__init__(self, error.errno, error.strerror)
        self.url = url

    def __str__(self) -> str:
        return f"cannot write '{self.url}': {self.strerror}"


def _precondition_failed(error: BaseException) -> bool:
    """Whether an s3fs/botocore error is an HTTP 412 (or 409) from a conditional write."""
    seen = error
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = response.get("Error", {}).get("Code")
            if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return True
        seen = seen.__cause__ or seen.__context__
    return "pre-condition" in str(error) or "precondition" in str(error).lower()


class Store:
    """Keys (``/``-separated, relative) under the root ``url`` of a registry."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url.rstrip("/")
        self.storage_options = storage_options
        self.local = is_local(url)
        if self.local:
            self.root = os.path.abspath(local_path(self.url))
            self.fs = None
        else:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
            self.root = self.root.rstrip("/")

    def path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/")) if self.local else f"{self.root}/{key}"

    def url_of(self, key: str) -> str:
        """What dlr's readers (zarr, model_io) open for ``key``."""
        return self.path(key) if self.local else f"{self.url}/{key}"

    # reads -------------------------------------------------------------------------------------
    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None if it does not exist."""
        return self.read_tagged(key)[0]

    def read_tagged(self, key: str) -> tuple[bytes | None, str | None]:
        """The bytes and the tag a :meth:`swap` must name (the ETag on S3; locally None)."""
        if self.local:
            try:
                with open(self.path(key), "rb") as f:
                    return f.read(), None
            except (FileNotFoundError, NotADirectoryError):
                return None, None
        bucket, obj = self._split(key)
        try:
            response = self.fs.call_s3("get_object", Bucket=bucket, Key=obj)
        except FileNotFoundError:
            return None, None
        return _body(self.fs, response), response["ETag"]

    def exists(self, key: str) -> bool:
        if self.local:
            return os.path.exists(self.path(key))
        self.fs.invalidate_cache()
        return self.fs.exists(self.path(key))

    def listdir(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (files and directories), sorted; [] if none."""
        if self.local:
            try:
                return sorted(os.listdir(self.path(prefix)))
            except FileNotFoundError:
                return []
        try:
            entries = self.fs.ls(self.path(prefix), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    # writes ------------------------------------------------------------------------------------
    def write(self, key: str, data: bytes) -> None:
        """Replace (or create) ``key`` atomically with ``data``."""
        with self._writing(key):
            if self.local:
                target = self.path(key)
                tmp = self._local_temp(target, data)
                os.replace(tmp, target)
                fsync_dir(os.path.dirname(target))
                return
            self.fs.pipe_file(self.path(key), data)

    def create(self, key: str, data: bytes) -> str | None:
        """Create ``key`` with ``data`` only if it does not exist; returns the new tag.

        Raises :class:`Conflict` if it exists.
        """
        with self._writing(key):
            return self._create(key, data)

    def _create(self, key: str, data: bytes) -> str | None:
        if self.local:
            target = self.path(key)
            tmp = self._local_temp(target, data)
            try:
                os.link(tmp, target)
            except FileExistsError:
                if os.stat(tmp).st_nlink != 2:  # 2: a retried NFS link that did link
                    raise Conflict(key) from None
            finally:
                os.remove(tmp)
            fsync_dir(os.path.dirname(target))
            return None
        bucket, obj = self._split(key)
        try:
            response = self.fs.call_s3(
                "put_object", Bucket=bucket, Key=obj, Body=data, IfNoneMatch="*"
            )
        except (FileExistsError, OSError) as e:
            if isinstance(e, FileExistsError) or _precondition_failed(e):
                raise Conflict(key) from None
            raise
        return response["ETag"]

    def swap(self, key: str, data: bytes, tag: str | None) -> str | None:
        """Replace ``key`` only if it still has ``tag`` (S3 ``If-Match``); returns the new tag.

        Locally there is no tag: the caller has checked the content it replaces, and the
        replacement is a temp-file rename. Raises :class:`Conflict` if the object changed.
        """
        if self.local:
            self.write(key, data)
            return None
        bucket, obj = self._split(key)
        try:
            response = self.fs.call_s3("put_object", Bucket=bucket, Key=obj, Body=data, IfMatch=tag)
        except (FileNotFoundError, OSError) as e:
            if isinstance(e, FileNotFoundError) or _precondition_failed(e):
                raise Conflict(key) from None
            raise
        return response["ETag"]

    @contextmanager
    def _writing(self, key: str):
        """The one place a full disk becomes :class:`StorageFull` naming ``key``."""
        try:
            yield
        except StorageFull:
            raise
        except OSError as e:
            if e.errno in FULL:
                raise StorageFull(self.url_of(key), e) from None
            raise

    def delete(self, key: str, tag: str | None = None) -> None:
        """Delete ``key`` (a file or a tree) if it exists; with ``tag``, only if unchanged."""
        if self.local:
            remove(self.path(key))
            return
        if tag is not None:
            bucket, obj = self._split(key)
            try:
                self.fs.call_s3("delete_object", Bucket=bucket, Key=obj, IfMatch=tag)
            except FileNotFoundError:
                pass
            except OSError as e:
                if _precondition_failed(e):
                    raise Conflict(key) from None
                raise
            return
        if self.exists(key):
            self.fs.rm(self.path(key), recursive=True)

    def temp_key(self, prefix: str) -> str:
        """A fresh key under ``prefix`` for staging: hidden (listings skip it), and naming this
        host and process so a later writer can tell it was left by a process that died."""
        return f"{prefix}/.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"

    def remove_stale_temps(self, prefixes: tuple[str, ...]) -> list[str]:
        """Delete the temporaries under ``prefixes`` left by dead processes of this host."""
        removed = []
        for prefix in prefixes:
            for name in self.listdir(prefix):
                if not name.startswith(".tmp-"):
                    continue
                host, pid, _ = (name[len(".tmp-") :].rsplit("-", 2) + ["", ""])[:3]
                if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                    self.delete(f"{prefix}/{name}")
                    removed.append(f"{prefix}/{name}")
        return removed

    def publish_tree(self, staged: str, key: str) -> None:
        """Move the finished tree ``staged`` to ``key``, replacing what is there.

        Locally: fsync the tree, rename it into place. On object storage: a server-side copy,
        then the staged objects are deleted (the caller commits a pointer only after this).
        """
        with self._writing(key):
            self._publish_tree(staged, key)

    def _publish_tree(self, staged: str, key: str) -> None:
        if self.local:
            from dlr.atomic import fsync_tree, publish

            source, target = self.path(staged), self.path(key)
            fsync_tree(source)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            publish(source, target)
            return
        target = self.path(key)
        self.delete(key)
        self.fs.copy(self.path(staged) + "/", target, recursive=True)
        self.fs.rm(self.path(staged), recursive=True)

    def _local_temp(self, target: str, data: bytes) -> str:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = os.path.join(
            os.path.dirname(target), f".{os.path.basename(target)}.tmp-{uuid.uuid4().hex[:12]}"
        )
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            remove(tmp)
            raise
        return tmp

    def _split(self, key: str) -> tuple[str, str]:
        bucket, _, prefix = self.path(key).partition("/")
        return bucket, prefix


def _body(fs, response) -> bytes:
    """Read a get_object response body on s3fs's event loop."""
    from fsspec.asyn import sync

    async def read():
        async with response["Body"] as stream:
            return await stream.read()

    return sync(fs.loop, read)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
