"""A model registry with no server: a local directory or an object-store prefix.

    REG/registry.json          format, the schema fixed at the first ingest, the pinned holdout,
                               the versions gc removed, and the "event" of its last change
    REG/spans.json             the committed spans in commit order (rewriting it is the commit),
                               and the "event" of the last commit
    REG/spans/<id>/            a span's train rows: a dlr dataset (X, y[, w]), written once,
                               and summary.json, what drift needs of them (dlr.spansummary)
    REG/holdout/<id>/          the span's fresh-holdout rows, same format
    REG/versions/<n>/          immutable version n: a model directory plus lineage.json
    REG/aliases/<name>.json    {"alias", "version", "previous", "moved_at", "run", "by", "reason",
                                "event"}: the pointer, naming the history event of its move
    REG/history/<time>-<id>.json   one immutable file per event (alias move, exclude, pin, ...)
    REG/lease.json             the lease of the run that may change the registry (dlr.lease)
    REG/runs/<run_key>/        per-run state: run.json, checkpoints/

Every file is published whole (temp + fsync + rename locally, one PUT on object storage) and
every version directory is complete before it is visible (locally renamed into place; on object
storage ``model.json`` is written last). An alias is one small pointer file, so a reader
resolving ``REG@champion`` gets the old version or the new one, never a mix. Writers serialize
through the lease (:mod:`dlr.lease`); alias moves are also compare-and-swap against the version
the caller expects (``If-Match`` on S3), and so are rewrites of spans.json on object storage.

Every change is committed by rewriting one small document — an alias pointer (a move),
spans.json (ingest, exclude, include, gc of span data) or registry.json (a holdout pin, gc of
versions) — and that document carries the change's history event; the event's file in
``history/`` is written after it. So the history reports exactly the changes that happened:
killed before the rewrite, nothing changed and nothing is recorded; killed after it,
:meth:`Registry.history` reads the event from the document until its file exists. The next
rewrite of the document writes the file before replacing the document, and so does every
command and run once it holds the lease (:meth:`Registry.complete_history`).
"""

import copy
import getpass
import json
import os
import re
import socket
import uuid
from datetime import UTC, datetime
from typing import NamedTuple

from dlr import serial
from dlr.atomic import fsync_dir, fsync_tree, remove
from dlr.errors import DlrError, ModelError
from dlr.pause import pause_point
from dlr.regstore import Conflict, Store

FORMAT = "dlr-registry"
FORMAT_VERSION = 1
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
RUN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]*$")


class RegistryConflict(DlrError):
    """The registry changed under the caller (an alias moved, a lease was lost)."""


class SpanInfo(NamedTuple):
    """A committed span. ``committed_at`` is ISO 8601 UTC; ``source`` the ingested path(s)."""

    id: str
    rows: int
    train_rows: int
    holdout_rows: int
    committed_at: str
    source: str
    excluded: bool
    reason: str | None
    train_url: str
    holdout_url: str


class VersionInfo(NamedTuple):
    """An immutable registered model version; ``url`` is its model directory."""

    version: int
    created_at: str
    lineage: dict
    url: str


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def whoami(command: str) -> str:
    """Who made a change by hand: ``dlr registry promote (user@host)``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{command} ({user}@{socket.gethostname()})"


class Registry:
    """An existing registry at ``url`` (see the module docstring for its layout)."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = str(url).rstrip("/")
        self.storage_options = storage_options
        self.store = Store(self.url, storage_options)
        self._meta()  # fails clearly if there is no registry here

    @classmethod
    def create_or_open(cls, url: str, storage_options: dict | None = None) -> "Registry":
        """Open the registry at ``url``, creating an empty one if there is none."""
        store = Store(str(url), storage_options)
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "schema": None, "holdout": None}
        try:
            store.create("registry.json", serial.json_bytes(doc))
        except Conflict:
            pass  # it exists (perhaps just created by a concurrent ingest)
        except OSError as e:
            raise DlrError(f"cannot create a registry at '{url}': {e.strerror or e}") from None
        return cls(url, storage_options)

    # metadata ----------------------------------------------------------------------------------
    def _read_json(self, key: str):
        raw = self.store.read(key)
        return None if raw is None else self._parse(raw, key)

    def _parse(self, raw: bytes, key: str):
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise DlrError(f"'{self.store.url_of(key)}' is not valid JSON: {e}") from None

    def _meta(self) -> dict:
        meta = self._read_json("registry.json")
        if meta is None:
            raise DlrError(
                f"no dlr registry at '{self.url}' (no registry.json); "
                "`dlr ingest DATA --registry REG --label COLUMN` creates one"
            )
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise DlrError(
                f"'{self.url}/registry.json' is not a dlr registry of format version "
                f"{FORMAT_VERSION}"
            )
        return meta

    @property
    def schema(self) -> dict | None:
        """{"features": [...], "label": str, "sample_weight": str | None, "dtypes": {...},
        "x_dtype": str, "drift": {"bins": int, "min": [...], "max": [...]}}, fixed at the
        first ingest; None before it. ``drift`` (the PSI bins, :class:`dlr.summary.Edges`)
        is absent in a registry from before it was kept, until :meth:`set_drift_edges`."""
        return self._meta()["schema"]

    def fixed_schema(self) -> dict | None:
        """:attr:`schema` once a committed span fixed it, else None: a first ingest writes the
        schema just before its commit, and one killed in between leaves a schema that no span
        has, which the next first ingest replaces."""
        schema = self.schema
        return schema if schema is None or self.span_entries() else None

    def set_schema(self, schema: dict) -> None:
        """Fix the schema (first ingest only, see :meth:`fixed_schema`; the caller holds the
        lease)."""

        def change(meta: dict):
            if meta["schema"] not in (None, schema) and self.span_entries():
                raise RegistryConflict(f"the schema of '{self.url}' is already fixed")
            return {**meta, "schema": schema}, None

        self._commit("registry.json", change, "meta")

    def set_drift_edges(self, edges: dict) -> None:
        """Record the drift edges in a schema from before they were kept (the caller holds
        the lease); :class:`RegistryConflict` if other edges are recorded already."""

        def change(meta: dict):
            there = meta["schema"].get("drift")
            if there is not None:
                if there != edges:
                    raise RegistryConflict(f"the drift edges of '{self.url}' are already fixed")
                return None
            return {**meta, "schema": {**meta["schema"], "drift": edges}}, None

        self._commit("registry.json", change, "meta")

    @property
    def holdout(self) -> dict | None:
        """The fingerprint of the pinned holdout dataset, or None."""
        return self._meta()["holdout"]

    def pin_holdout(self, fingerprint: dict, by: str, run: str | None = None) -> None:
        """Record ``fingerprint`` as the pinned holdout (replacing any), with a history event
        carried by registry.json (the commit)."""

        def change(meta: dict):
            event = {"event": "pin", "from": meta["holdout"], "to": fingerprint, "by": by}
            return {**meta, "holdout": fingerprint}, {**event, "run": run}

        self._commit("registry.json", change, "meta")

    def note_holdout_files(self, files: str) -> None:
        """Record ``files``, the digest of the pinned holdout's stored files, once its content
        was hashed again and found the same (a pin from before the digest was kept, or its files
        rewritten with the same bytes): later runs hash it again only if its files change. No
        history event: the pinned holdout is the same."""

        def change(meta: dict):
            pin = meta["holdout"]
            if pin is None or pin.get("files") == files:
                return None
            return {**meta, "holdout": {**pin, "files": files}}, None

        self._commit("registry.json", change, "meta")

    # commits and their history events ----------------------------------------------------------
    def _commit(self, key: str, change, stage: str) -> dict | None:
        """Rewrite the document ``key`` (registry.json, spans.json) with ``change(doc)``: None
        for no change, else ``(new doc, event or None)``. Returns the document now committed.

        The new document carries ``event`` (stamped with "at" and "id"); the event's file is
        written after the document, and the event the replaced document carried is written
        before it is replaced, so no event is lost and none is recorded for a change that was
        not committed. Pause points ``<stage>-commit`` (before the write) and
        ``<stage>-history`` (after it, before the event's file) are for crash tests.

        The caller holds the lease, which serializes writers. On object storage the rewrite is
        also a compare-and-swap (``If-Match`` on the ETag it read, ``If-None-Match`` for the
        first): if another writer committed in between (one whose lease expired mid-commit),
        ``change`` is applied again to what that writer committed. A local rename cannot be
        conditional; there the lease alone serializes the commits.
        """
        while True:
            raw, tag = self.store.read_tagged(key)
            doc = None if raw is None else self._parse(raw, key)
            if doc is not None:
                self._record(doc.get("event"))  # before the document carrying it is replaced
            result = change(copy.deepcopy(doc))
            if result is None:
                return doc
            new, event = result
            new = {k: v for k, v in new.items() if k != "event"}
            if event is not None:
                event = new["event"] = self._stamp(event)
            pause_point(f"{stage}-commit")  # tests: between the read and the conditional write
            try:
                if raw is None:
                    self.store.create(key, serial.json_bytes(new))
                else:
                    self.store.swap(key, serial.json_bytes(new), tag)
            except Conflict:
                continue  # another writer committed meanwhile: apply the change to its document
            pause_point(f"{stage}-history")  # tests: committed, the event's file not yet written
            self._record(event)
            return new

    def _stamp(self, event: dict) -> dict:
        at = now_iso()
        return {"at": at, "id": _event_id(at), **event}

    def _record(self, event: dict | None) -> None:
        """Write the history file of ``event`` (carried by a commit document), if missing."""
        if event is None:
            return
        key = f"history/{event['id']}.json"
        if not self.store.exists(key):
            try:
                self.store.create(key, serial.json_bytes(event))
            except Conflict:
                pass  # written meanwhile by another process

    def _carried_events(self) -> list[dict]:
        """The events the commit documents carry (their files may not be written yet)."""
        events = [
            _pointer_event(doc)
            for doc in (self._alias_doc(a)[0] for a in self._alias_names())
            if doc is not None and "event" in doc
        ]
        for key in ("registry.json", "spans.json"):
            doc = self._read_json(key)
            if doc is not None and doc.get("event") is not None:
                events.append(doc["event"])
        return events

    def complete_history(self) -> None:
        """Write the missing history file of every change whose writer was killed between its
        commit and the file. Commands and runs call this once they hold the lease."""
        for event in self._carried_events():
            self._record(event)

    # spans -------------------------------------------------------------------------------------
    def span_entries(self) -> list[dict]:
        """The raw entries of spans.json, in commit order."""
        doc = self._read_json("spans.json")
        return [] if doc is None else doc["spans"]

    def update_span_entries(self, change, event=None) -> list[dict]:
        """Rewrite spans.json — the commit point of ingest, exclude, include and gc — with
        ``change(entries)``: the new list of entries, or None for no change. Returns the
        entries now committed.

        ``event`` is the history event of the change: a dict, or ``event(old, new)`` of the
        entries before and after (None: no event). spans.json carries it; see :meth:`_commit`
        (a compare-and-swap on object storage that re-applies ``change`` to what another
        writer committed, so no span is lost; pause points ``spans-commit``,
        ``spans-history``).
        """
        describe = event if callable(event) else (lambda old, new: event)

        def commit(doc: dict | None):
            entries = [] if doc is None else doc["spans"]
            new = change([dict(e) for e in entries])
            if new is None:
                return None
            return {"spans": new}, describe(entries, new)

        doc = self._commit("spans.json", commit, "spans")
        return [] if doc is None else doc["spans"]

    def spans(self, include_excluded: bool = False) -> list[SpanInfo]:
        """The committed spans in commit order (without excluded ones unless asked)."""
        return [
            self._span_info(e)
            for e in self.span_entries()
            if not e.get("collected") and (include_excluded or not e["excluded"])
        ]

    def _span_info(self, e: dict) -> SpanInfo:
        return SpanInfo(
            e["id"],
            e["rows"],
            e["train_rows"],
            e["holdout_rows"],
            e["committed_at"],
            e["source"],
            e["excluded"],
            e.get("reason"),
            self.store.url_of(f"spans/{e['id']}"),
            self.store.url_of(f"holdout/{e['id']}"),
        )

    def find_span(self, span_id: str) -> dict:
        """The entry of the span whose id is ``span_id`` or starts with it (≥ 6 characters)."""
        entries = self.span_entries()
        found = [e for e in entries if e["id"] == span_id] or [
            e for e in entries if len(span_id) >= 6 and e["id"].startswith(span_id)
        ]
        if len(found) != 1:
            what = "no" if not found else "more than one"
            raise DlrError(f"'{self.url}' has {what} committed span '{span_id}'")
        return found[0]

    def exclude_span(self, span_id: str, reason: str, by: str) -> bool:
        """Leave a span out of every later training set (recorded in the history). False if
        it was already excluded for the same reason: nothing changed, no event."""
        return self._set_excluded(span_id, True, reason, by)

    def include_span(self, span_id: str, reason: str, by: str) -> bool:
        """Undo :meth:`exclude_span`; False if the span was not excluded (nothing changed)."""
        return self._set_excluded(span_id, False, reason, by)

    def _set_excluded(self, span_id: str, excluded: bool, reason: str, by: str) -> bool:
        if not reason:
            raise DlrError("say why: a reason is required")
        entry = self.find_span(span_id)
        if entry.get("collected"):
            raise DlrError(f"span {entry['id']} was removed by gc; ingest it again instead")
        changed = []

        def change(entries: list[dict]) -> list[dict] | None:
            changed.clear()
            for e in entries:
                if e["id"] == entry["id"]:
                    new = (excluded, reason if excluded else None)
                    if (e["excluded"], e.get("reason")) == new:
                        return None  # already so (a rerun): nothing to commit
                    e["excluded"], e["reason"] = new
                    changed.append(e["id"])
            return entries

        event = {"event": "exclude" if excluded else "include", "span": entry["id"]}
        self.update_span_entries(change, {**event, "by": by, "reason": reason})
        return bool(changed)

    # versions ----------------------------------------------------------------------------------
    def _version_numbers(self) -> list[int]:
        """The numbers of the version directories (some may be removed by gc, see below)."""
        return sorted(int(n) for n in self.store.listdir("versions") if n.isdigit())

    def _removed_versions(self) -> set[int]:
        """The versions gc removed: committed in registry.json, their files deleted after."""
        return set(self._meta().get("removed_versions", ()))

    def versions(self) -> list[VersionInfo]:
        """The complete versions, ascending."""
        out = []
        removed = self._removed_versions()
        for n in self._version_numbers():
            info = None if n in removed else self._version_info(n)
            if info is not None:
                out.append(info)
        return out

    def _version_info(self, n: int) -> VersionInfo | None:
        if not self.store.exists(f"versions/{n}/model.json"):
            return None  # being written (object storage), or a write that failed
        lineage = self._read_json(f"versions/{n}/lineage.json") or {}
        return VersionInfo(n, lineage.get("created_at", ""), lineage, self.model_url(n))

    def version(self, n: int) -> VersionInfo:
        removed = int(n) in self._removed_versions()
        info = None if removed else self._version_info(int(n))
        if info is None:
            raise DlrError(f"'{self.url}' has no version {n}")
        return info

    def model_url(self, n: int) -> str:
        """The model directory of version ``n`` (what dlr.load reads)."""
        return self.store.url_of(f"versions/{int(n)}")

    def register_version(self, model, lineage: dict) -> int:
        """Write the fitted ``model`` with ``lineage`` as the next version; returns its number.

        The version appears complete or not at all: locally the directory is written under a
        temporary name and renamed into place (a rename never replaces a complete version); on
        object storage lineage.json is created exclusively first, ``model.json`` last. A write
        that fails (a full disk) is a :class:`DlrError` naming the version's path, and leaves
        no trace of the version.
        """
        n = max([0, *self._version_numbers(), *self._removed_versions()]) + 1
        while True:
            key = f"versions/{n}"
            try:
                if self._write_version(
                    model, key, {"version": n, "created_at": now_iso(), **lineage}
                ):
                    return n
            except OSError as e:
                raise DlrError(
                    f"cannot write version {n} to '{self.store.url_of(key)}': "
                    f"{e.strerror or e}; nothing was registered"
                ) from None
            n += 1  # the number was taken meanwhile: try the next one

    def _write_version(self, model, key: str, doc: dict) -> bool:
        """Write version ``key`` whole; False if another writer took that number first."""
        if self.store.local:
            target = self.store.path(key)
            tmp = self.store.path(self.store.temp_key("versions"))
            try:
                model.save(tmp, overwrite=False)
                with open(os.path.join(tmp, "lineage.json"), "wb") as f:
                    f.write(serial.json_bytes(doc))
                fsync_tree(tmp)
                try:
                    os.rename(tmp, target)
                except OSError:
                    if os.path.exists(target):
                        return False
                    raise
                fsync_dir(os.path.dirname(target))
                return True
            finally:
                remove(tmp)
        try:
            self.store.create(f"{key}/lineage.json", serial.json_bytes(doc))
        except Conflict:
            return False
        try:
            model.save(
                self.store.url_of(key), overwrite=False, storage_options=self.storage_options
            )
        except BaseException:
            try:
                self.store.delete(key)  # no model.json: never visible; free the number
            except OSError:
                pass
            raise
        return True

    def verify_version(self, n: int) -> None:
        """Raise :class:`ModelError` unless version ``n`` loads and its checksums match."""
        from dlr import model_io

        info = self.version(n)
        try:
            model_io.load_model(info.url, self.storage_options)
        except ModelError as e:
            raise ModelError(f"version {n} of '{self.url}' is damaged: {e}") from None

    # aliases -----------------------------------------------------------------------------------
    def _alias_doc(self, name: str) -> tuple[dict | None, str | None]:
        raw, tag = self.store.read_tagged(f"aliases/{name}.json")
        return (json.loads(raw) if raw is not None else None), tag

    def _alias_names(self) -> list[str]:
        return [
            f[: -len(".json")]
            for f in self.store.listdir("aliases")
            if f.endswith(".json") and not f.startswith(".")
        ]

    def aliases(self) -> dict[str, int]:
        """{alias name: version} of the aliases that point at a version."""
        out = {}
        for name in self._alias_names():
            doc = self._alias_doc(name)[0]
            if doc is not None and doc["version"] is not None:
                out[doc["alias"]] = doc["version"]
        return out

    def alias(self, name: str) -> int | None:
        """The version ``name`` points at, or None."""
        doc = self._alias_doc(_check_name(name))[0]
        return None if doc is None else doc["version"]

    def alias_record(self, name: str) -> dict | None:
        """The alias pointer itself (version, previous version, when, by which run, why), or
        None if the alias does not exist (or was removed)."""
        doc = self._alias_doc(_check_name(name))[0]
        return None if doc is None or doc["version"] is None else doc

    def move_alias(
        self,
        name: str,
        version: int | None,
        *,
        expected: int | None,
        run: str | None,
        reason: str,
        lease=None,
        by: str | None = None,
    ) -> None:
        """Point alias ``name`` at ``version`` (None removes it), compare-and-swap.

        Raises :class:`RegistryConflict` if the alias is not at ``expected`` (None: absent) or
        if ``lease`` is given and no longer held. An alias already at ``version`` is left as it
        is, with no new event (so the rerun of a run killed after its move finishes quietly).

        The pointer write is the move, and the pointer carries its own history event; the
        event's file in ``history/`` is written after it. So the history never claims a move
        that did not happen: killed before the pointer write, nothing moved and nothing is
        recorded; killed after it, :meth:`history` reads the event from the pointer until its
        file exists, and the next move of the alias (or the rerun) writes that file before
        replacing the pointer.
        """
        _check_name(name)
        if lease is not None and not lease.held:
            raise RegistryConflict(
                f"the registry lease of run {lease.run_key} is no longer held; alias '{name}' "
                "not moved"
            )
        key = f"aliases/{name}.json"
        current_doc, tag = self._alias_doc(name)
        current = None if current_doc is None else current_doc["version"]
        if current_doc is not None and "event" in current_doc:
            self._record(_pointer_event(current_doc))  # before the pointer carrying it goes
        if current == version:
            return
        if current != expected:
            raise RegistryConflict(
                f"alias '{name}' of '{self.url}' points at {_v(current)}, not at {_v(expected)} "
                "as expected (it moved meanwhile); not moved"
            )
        if version is not None:
            self.version(version)
        at = now_iso()
        doc = {
            "alias": name,
            "version": None if version is None else int(version),
            "previous": current,
            "moved_at": at,
            "run": run,
            "by": by,
            "reason": reason,
            "event": _event_id(at),
        }
        pause_point("alias-write")  # crash tests: before the move
        try:
            if current_doc is None:
                self.store.create(key, serial.json_bytes(doc))
            else:  # a removed alias keeps its pointer, with version null (a tombstone)
                self.store.swap(key, serial.json_bytes(doc), tag)
        except Conflict:
            raise RegistryConflict(
                f"alias '{name}' of '{self.url}' moved meanwhile; not moved"
            ) from None
        pause_point("alias-history")  # crash tests: moved, its history file not yet written
        self._record(_pointer_event(doc))

    # history -----------------------------------------------------------------------------------
    def append_history(self, event: dict) -> dict:
        """Write ``event`` as a new immutable history file; returns it with "at" and "id".
        Only for events of no change to the registry: a change's event is carried by its
        commit (:meth:`_commit`), or it could be recorded for a change that never happened."""
        event = self._stamp(event)
        self.store.create(f"history/{event['id']}.json", serial.json_bytes(event))
        return event

    def history(self) -> list[dict]:
        """Every event, oldest first: the history files, and the event any commit document
        carries whose file is not written yet (its writer was killed between the two)."""
        # read before the files: an event whose file appears meanwhile (its document replaced)
        # is still in one of them
        carried = self._carried_events()
        files = [f for f in self.store.listdir("history") if f.endswith(".json") and f[0] != "."]
        events = {f[: -len(".json")]: self._read_json(f"history/{f}") for f in files}
        for event in carried:
            events.setdefault(event["id"], event)
        return [events[k] for k in sorted(events)]

    def previous_champion(self, alias: str = "champion") -> int | None:
        """The version ``alias`` pointed at before its current version (rollback's default)."""
        doc = self.alias_record(alias)
        return None if doc is None else doc.get("previous")

    # runs --------------------------------------------------------------------------------------
    def run_record(self, run_key: str) -> dict | None:
        """run.json of ``run_key``, or None if the run never finished."""
        return self._read_json(f"runs/{_check_run_key(run_key)}/run.json")

    def save_run_file(self, run_key: str, name: str, data: bytes) -> None:
        """Write ``runs/<run_key>/<name>`` whole (a full disk: :class:`dlr.regstore.StorageFull`,
        one line naming the file, and the file as it was)."""
        self.store.write(f"runs/{_check_run_key(run_key)}/{name}", data)

    def run_url(self, run_key: str) -> str:
        return self.store.url_of(f"runs/{_check_run_key(run_key)}")

    def checkpoint_url(self, run_key: str) -> str:
        """Where run ``run_key`` keeps its training checkpoints (``fit(checkpoint=...)``)."""
        return f"{self.run_url(run_key)}/checkpoints"

    # garbage collection ------------------------------------------------------------------------
    def gc(self, keep: int, by: str = "gc") -> list[int]:
        """Remove old versions; returns the removed version numbers.

        Kept: the ``keep`` newest versions, every aliased version, and every version named
        (from or to) in the last ``keep`` alias moves. The caller holds the lease.

        The removal is committed at once, with its history event, in registry.json; from then
        on the versions are gone from every listing and reference, and their files are deleted
        after (a gc killed before deleting them all leaves the rest to the next gc).
        """
        if keep < 1:
            raise DlrError(f"--keep must be at least 1, got {keep}")
        versions = [v.version for v in self.versions()]
        kept = set(versions[-keep:]) | set(self.aliases().values())
        moves = [e for e in self.history() if e.get("event") == "alias"][-keep:]
        kept |= {e[k] for e in moves for k in ("from", "to") if e.get(k) is not None}
        self.store.remove_stale_temps(("spans", "holdout", "staging", "versions"))
        removed = [n for n in versions if n not in kept]

        def change(meta: dict):
            gone = sorted({*meta.get("removed_versions", ()), *removed})
            event = {"event": "gc", "versions": removed, "by": by, "run": None}
            return {**meta, "removed_versions": gone}, event

        if removed:
            self._commit("registry.json", change, "meta")
        pause_point("gc-delete")  # crash tests: committed, the files not deleted yet
        present = set(self._version_numbers())
        for n in sorted(self._removed_versions() & present):
            self._remove_version(n)
        return removed

    def _remove_version(self, n: int) -> None:
        key = f"versions/{n}"
        if self.store.local:
            hidden = self.store.path(self.store.temp_key("versions"))
            os.rename(self.store.path(key), hidden)  # gone from listings at once
            remove(hidden)
        else:
            self.store.delete(f"{key}/model.json")  # invisible first, then the rest
            self.store.delete(key)

    def gc_spans(self, by: str = "gc") -> list[str]:
        """Delete the data of excluded spans that no remaining version trained on.

        Their entries stay in spans.json (marked collected, the commit, which carries the
        history event), so ingesting the same batch again is still recognised; the data is
        deleted after (what a killed gc left, the next one deletes). Returns the span ids
        whose data was removed.
        """
        used = {s for v in self.versions() for s in (v.lineage.get("spans") or [])}
        removed = [
            e["id"]
            for e in self.span_entries()
            if e["excluded"] and not e.get("collected") and e["id"] not in used
        ]

        def change(entries: list[dict]) -> list[dict]:
            for e in entries:
                if e["id"] in removed:
                    e["collected"] = True
            return entries

        if removed:
            event = {"event": "gc", "spans": removed, "by": by, "run": None}
            self.update_span_entries(change, event)
        for e in self.span_entries():
            if e.get("collected"):
                for key in (f"spans/{e['id']}", f"holdout/{e['id']}"):
                    self.store.delete(key)
        return removed


def _event_id(at: str) -> str:
    """The id (and file name) of a history event at ISO time ``at``: sorts by time."""
    return f"{at.replace('-', '').replace(':', '')}-{uuid.uuid4().hex[:8]}"


def _pointer_event(doc: dict) -> dict:
    """The history event of the move that alias pointer ``doc`` made."""
    return {
        "at": doc["moved_at"],
        "id": doc["event"],
        "event": "alias",
        "alias": doc["alias"],
        "from": doc["previous"],
        "to": doc["version"],
        "run": doc["run"],
        "by": doc.get("by"),
        "reason": doc["reason"],
    }


def _v(version: int | None) -> str:
    return "nothing" if version is None else f"version {version}"


def _check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise DlrError(
            f"invalid alias name {name!r}: use letters, digits, '_', '.', '-', starting with a "
            "letter"
        )
    return name


def _check_run_key(run_key: str) -> str:
    if not RUN_KEY.match(run_key or ""):
        raise DlrError(
            f"invalid run key {run_key!r}: use letters, digits and '_.:+-' (no '/' or spaces)"
        )
    return run_key


def split_reference(path: str) -> tuple[str, str] | None:
    """``"REG@champion"`` → ("REG", "champion"); ``"REG@7"`` → ("REG", "7"); else None."""
    base, sep, ref = str(path).rpartition("@")
    if not sep or not base or not (ref.isdigit() or NAME.match(ref)):
        return None
    return base, ref


def resolve_model_path(path: str, storage_options: dict | None = None) -> str:
    """The model directory a path names: ``REG@alias`` and ``REG@N`` resolve through the
    registry REG (one read of the alias pointer); any other path is returned unchanged."""
    parts = split_reference(path)
    if parts is None:
        return str(path)
    base, ref = parts
    store = Store(base, storage_options)
    if not store.exists("registry.json"):
        return str(path)  # an ordinary path that happens to contain '@'
    registry = Registry(base, storage_options)
    if ref.isdigit():
        return registry.version(int(ref)).url
    version = registry.alias(ref)
    if version is None:
        raise ModelError(
            f"registry '{base}' has no alias '{ref}' (aliases: "
            f"{', '.join(sorted(registry.aliases())) or 'none'})"
        )
    return registry.model_url(version)
