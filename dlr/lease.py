"""One run at a time per registry: a lease in ``REG/lease.json``, never ``flock``.

    {"owner": "host:pid ...", "run_key": "...", "token": "<uuid>", "acquired": <epoch s>,
     "expires": <epoch s>}

- **Acquire** is an exclusive create (:meth:`dlr.regstore.Store.create`). Locally it is
  ``link(2)`` of a complete, fsynced temporary file, not ``open(O_CREAT | O_EXCL)``: the same
  exclusivity (it fails if the name exists), but the lease appears whole, so a reader never
  finds it empty or half-written; and it is the exclusive-create idiom open(2) gives for NFS.
  On S3 it is a conditional PUT with ``If-None-Match: *``. Of any number of racing processes
  exactly one creates it.
- **Renewal** rewrites the lease with a later expiry while the run lives, from a daemon thread
  every ``ttl/3`` seconds: on S3 a PUT with ``If-Match`` on the ETag of the holder's last write
  (so it fails if anyone else wrote since); locally the holder checks that the token is still its
  own and that the lease has not expired (with a margin of ``ttl/10``), then renames a temporary
  file over it. A holder that cannot renew has lost the lease and knows it (:attr:`Lease.held`).
- **Takeover** of an expired lease (its holder crashed): on S3 a PUT with ``If-Match`` on the
  expired lease's ETag; locally the taker first creates ``lease.json.takeover-<expired token>``
  exclusively — only one taker per expired lease gets past this — and checks that the lease still
  holds that token before replacing it.
- **Release** deletes the lease (on S3 with ``If-Match``), so the next run need not wait.

Clocks of the machines sharing a registry are assumed to agree to well within ``ttl``.
"""

import json
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime

from dlr.errors import DlrError
from dlr.regstore import Conflict

KEY = "lease.json"
#: ttl of the lease held by commands that change the registry for a moment (ingest's commit,
#: promote, rollback, ...): a crashed one blocks the next for at most this long.
COMMAND_TTL = 10.0


class LeaseHeld(DlrError):
    """Another live run holds the registry's lease."""

    def __init__(self, owner: str, run_key: str, expires: float):
        self.owner, self.run_key, self.expires = owner, run_key, expires
        until = datetime.fromtimestamp(expires, UTC).isoformat(timespec="seconds")
        super().__init__(
            f"another run holds the registry lease (owner {owner}, run {run_key}, "
            f"expires {until}); try again later"
        )


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    """A held lease on a registry; use as a context manager (released on exit)."""

    def __init__(self, registry, doc: dict, tag: str | None, took_over: dict | None):
        self.registry = registry
        self.owner, self.run_key = doc["owner"], doc["run_key"]
        self.token, self.ttl = doc["token"], doc["expires"] - doc["acquired"]
        self.expires = doc["expires"]
        #: the expired lease this one replaced (its holder had crashed), or None
        self.took_over = took_over
        self._doc, self._tag = doc, tag
        self._lost = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name="dlr-lease", daemon=True)
        self._thread.start()

    # acquiring ---------------------------------------------------------------------------------
    @classmethod
    def acquire(
        cls, registry, *, owner: str, run_key: str, ttl: float = 60.0, wait: float = 0.0
    ) -> "Lease":
        """Take the lease of ``registry`` (or take over an expired one).

        Raises :class:`LeaseHeld` if another live lease exists, after retrying for up to
        ``wait`` seconds.
        """
        if not ttl > 0:
            raise DlrError(f"the lease ttl must be positive, got {ttl}")
        deadline = time.monotonic() + wait
        while True:
            try:
                return cls._attempt(registry, owner, run_key, ttl)
            except LeaseHeld:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))

    @classmethod
    def _attempt(cls, registry, owner: str, run_key: str, ttl: float) -> "Lease":
        store = registry.store
        current = None
        for _ in range(10):  # the lease changed between our create and our read: try again
            now = time.time()
            doc = {
                "owner": owner,
                "run_key": run_key,
                "token": uuid.uuid4().hex,
                "acquired": now,
                "expires": now + ttl,
            }
            try:
                return cls(registry, doc, store.create(KEY, _encode(doc)), None)
            except Conflict:
                pass
            raw, tag = store.read_tagged(KEY)
            if raw is None:
                continue
            current = _decode(raw, store.url_of(KEY))
            if current["expires"] > time.time():
                raise LeaseHeld(current["owner"], current["run_key"], current["expires"])
            taken, new_tag = cls._take_over(store, current, doc, tag)
            if taken:
                return cls(registry, doc, new_tag, current)
            time.sleep(0.05)  # another process is taking it over: see who won
        if current is None or current["expires"] > time.time():
            raise DlrError(f"could not acquire the lease of '{registry.url}': it keeps changing")
        claim = store.url_of(f"{KEY}.takeover-{current['token']}")
        raise DlrError(
            f"the lease of '{registry.url}' (owner {current['owner']}) has expired but is being "
            f"taken over by another process; if none is running, one crashed doing so: delete "
            f"'{claim}'"
        )

    @staticmethod
    def _take_over(store, expired: dict, doc: dict, tag: str | None) -> tuple[bool, str | None]:
        """Replace the ``expired`` lease by ``doc``: (True, new tag), or (False, None) if
        another process changed or is taking over the lease first."""
        if not store.local:
            try:
                return True, store.swap(KEY, _encode(doc), tag)
            except Conflict:
                return False, None
        # A taker that crashed between these two steps leaves its claim behind, and the claim
        # must then be deleted by hand (the error of _attempt names it).
        claim = f"{KEY}.takeover-{expired['token']}"
        try:
            store.create(claim, b"")
        except Conflict:
            return False, None
        try:
            raw = store.read(KEY)
            if raw is None or _decode(raw, KEY)["token"] != expired["token"]:
                return False, None
            store.write(KEY, _encode(doc))
        finally:
            store.delete(claim)
        return True, None

    # holding -----------------------------------------------------------------------------------
    @property
    def margin(self) -> float:
        return self.ttl / 10

    @property
    def held(self) -> bool:
        """Whether this lease is still ours and unexpired (re-reads the stored lease)."""
        if self._lost:
            return False
        raw, tag = self.registry.store.read_tagged(KEY)
        if raw is None:
            return False
        doc = _decode(raw, KEY)
        return doc["token"] == self.token and doc["expires"] - self.margin > time.time()

    def renew(self) -> None:
        """Extend the lease by ``ttl`` from now; raises :class:`DlrError` if it was lost."""
        with self._lock:
            if self._lost:
                raise DlrError(f"the registry lease of run {self.run_key} was lost")
            store = self.registry.store
            now = time.time()
            doc = {**self._doc, "expires": now + self.ttl}
            try:
                if store.local:
                    raw = store.read(KEY)
                    current = _decode(raw, KEY) if raw is not None else None
                    if (
                        current is None
                        or current["token"] != self.token
                        or current["expires"] - self.margin <= now
                    ):
                        raise Conflict(KEY)
                self._tag = store.swap(KEY, _encode(doc), self._tag)
            except Conflict:
                self._lost = True
                raise DlrError(
                    f"the registry lease of run {self.run_key} was lost (it expired or another "
                    "run took it over)"
                ) from None
            self._doc, self.expires = doc, doc["expires"]

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except Exception:  # lost, or the store is unreachable: `held` reports it
                if self._lost:
                    return

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            if self._lost:
                return
            self._lost = True
            store = self.registry.store
            try:
                if store.local:
                    raw = store.read(KEY)
                    if raw is not None and _decode(raw, KEY)["token"] == self.token:
                        store.delete(KEY)
                else:
                    store.delete(KEY, tag=self._tag)
            except Conflict:
                pass

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def read_lease(registry) -> dict | None:
    """The stored lease (held or expired), or None."""
    raw = registry.store.read(KEY)
    return None if raw is None else _decode(raw, registry.store.url_of(KEY))


def _encode(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2) + "\n").encode()


def _decode(raw: bytes, where: str) -> dict:
    try:
        doc = json.loads(raw)
        if not {"owner", "run_key", "token", "expires"} <= set(doc):
            raise ValueError("fields missing")
        return doc
    except (ValueError, TypeError) as e:
        raise DlrError(
            f"the registry lease '{where}' is damaged ({e}); delete it by hand"
        ) from None
