"""The history reports exactly the changes that happened: real ``dlr`` processes killed with
SIGKILL just before and just after the commit of each change (ingest, exclude, include, gc of
versions, gc of span data), on a local registry and on an S3-protocol server; then what
``dlr registry history --json``, ``spans --json`` and ``list --json`` say, and that the rerun of
the same command records the change once, with its file in ``history/``.

The pin of a holdout, committed the same way, is killed the same way in tests/test_retrain.py.
"""

import json
from typing import NamedTuple

import pyarrow.parquet as pq
import pytest

from dlr.registry import Registry
from dlr.spans import ingest
from dlr.spanset import training_source
from tests.registry_support import fitted, ok, spawn, table
from tests.test_object_storage import KEY, SECRET, endpoint  # noqa: F401 (the fixture)

CLI = "from dlr.cli import main; main()"


class Case(NamedTuple):
    """A command that makes one change, committed by rewriting spans.json ("spans") or
    registry.json ("meta"): pause points ``<commit>-commit`` (before) and ``<commit>-history``
    (after the commit, before the event's file)."""

    name: str
    commit: str


CASES = [
    Case("ingest", "spans"),
    Case("exclude", "spans"),
    Case("include", "spans"),
    Case("gc-versions", "meta"),  # dlr registry gc: first the versions...
    Case("gc-spans", "spans"),  # ...then the data of excluded spans no kept version used
]


class Subject:
    """A registry with spans s0 and s1 and versions 1, 2 (trained on s0) and 3 (on s1, the
    champion), prepared for ``case``: s0 excluded for include and gc."""

    def __init__(self, case: Case, url: str, options: dict | None, tmp_path):
        self.case, self.url, self.options = case, url, options
        self.flags = [f"--storage-option={k}={v}" for k, v in (options or {}).items()]
        days = []
        for day in range(3):
            days.append(str(tmp_path / f"{case.name}-day{day}.parquet"))
            pq.write_table(table(300, seed=day), days[-1])
        reg = Registry.create_or_open(url, options)
        for day in days[:2]:
            ingest([day], reg, label="label")
        self.s0, self.s1 = (s.id for s in reg.spans())
        for n, trained in enumerate([[self.s0], [self.s0], [self.s1]], start=1):
            model = fitted(training_source(reg, reg.spans(include_excluded=True)[:1]), n)
            assert reg.register_version(model, {"spans": trained}) == n
        reg.move_alias("champion", 3, expected=None, run="setup", reason="setup")
        if case.name in ("include", "gc-versions", "gc-spans"):
            reg.exclude_span(self.s0, "setup", by="setup")
        self.day2 = days[2]
        self.registry = reg
        self.before = {e["id"] for e in reg.history()}  # the setup's events

    def command(self) -> list[str]:
        url = self.url
        return {
            "ingest": ["ingest", self.day2, "--registry", url],
            "exclude": ["registry", "exclude", url, self.s0, "--reason", "labels shuffled"],
            "include": ["registry", "include", url, self.s0, "--reason", "labels fixed"],
            "gc-versions": ["registry", "gc", url, "--keep", "1"],
            "gc-spans": ["registry", "gc", url, "--keep", "1"],
        }[self.case.name] + self.flags

    def history(self) -> list[dict]:
        return json.loads(ok("registry", "history", self.url, "--json", *self.flags))

    def events(self) -> list[dict]:
        """The events of this case's change in ``dlr registry history --json``."""
        kind = {"gc-versions": "gc", "gc-spans": "gc"}.get(self.case.name, self.case.name)
        events = [e for e in self.history() if e["event"] == kind and e["id"] not in self.before]
        if kind == "gc":
            events = [e for e in events if self.case.name[3:] in e]
        return events

    def changed(self) -> bool:
        """Whether the registry shows the change (what `dlr registry spans/list` say)."""
        spans = json.loads(ok("registry", "spans", self.url, "--json", *self.flags))
        excluded = {s["id"]: s["excluded"] for s in spans}.get(self.s0)  # None: collected
        if self.case.name == "ingest":
            return len(spans) == 3
        if self.case.name in ("exclude", "include"):
            return excluded is (self.case.name == "exclude")
        if self.case.name == "gc-spans":
            return excluded is None
        listed = json.loads(ok("registry", "list", self.url, "--json", *self.flags))
        return [v["version"] for v in listed] == [3]

    def assert_describes_the_change(self, event: dict) -> None:
        expected = {
            "ingest": ("spans", [s.id for s in self.registry.spans()][-1:]),
            "exclude": ("span", self.s0),
            "include": ("span", self.s0),
            "gc-versions": ("versions", [1, 2]),
            "gc-spans": ("spans", [self.s0]),
        }[self.case.name]
        assert event[expected[0]] == expected[1], event

    def has_file(self, event: dict) -> bool:
        return self.registry.store.exists(f"history/{event['id']}.json")


def kill_at_pause(subjects: list[Subject], moment: str) -> None:
    """Run every subject's command at once, paused at its commit's point, and SIGKILL it."""
    processes = []
    try:
        for s in subjects:
            stage = f"{s.case.commit}-{'commit' if moment == 'before' else 'history'}"
            processes.append(spawn(CLI, *s.command(), env={"DLR_TEST_PAUSE_AT": stage}))
        for s, p in zip(subjects, processes, strict=True):
            lines = []
            for line in p.stderr:
                lines.append(line)
                if line.startswith("dlr: paused at"):
                    break
            assert lines and lines[-1].startswith("dlr: paused at"), (s.case, lines, p.wait())
            p.kill()
            p.wait(timeout=30)
    finally:
        for p in processes:
            p.kill()
            p.communicate()


def check_kill_and_rerun(subjects: list[Subject], moment: str) -> None:
    kill_at_pause(subjects, moment)
    after_kill = {}
    for s in subjects:
        events = s.events()
        if moment == "before":  # nothing committed: nothing changed, nothing recorded
            assert (events, s.changed()) == ([], False), s.case
        else:  # committed: the change is there and so is its event, its file not yet
            assert len(events) == 1 and s.changed(), (s.case, events)
            s.assert_describes_the_change(events[0])
            assert not s.has_file(events[0])
            after_kill[s.case.name] = events[0]["id"]
    for s in subjects:
        ok(*s.command())  # the rerun (waits for the killed command's lease to expire)
        (event,) = s.events()
        s.assert_describes_the_change(event)
        assert s.changed() and s.has_file(event), s.case
        if moment == "after":
            assert event["id"] == after_kill[s.case.name]  # the same event, now in history/
        # every event the history reports has its file now
        assert all(s.has_file(e) for e in s.history()), s.case
    gc = next(s for s in subjects if s.case.name == "gc-spans")
    assert not gc.registry.store.exists(f"spans/{gc.s0}")  # the rerun deleted the data
    assert not any(gc.registry.store.exists(f"versions/{n}/model.json") for n in (1, 2))


@pytest.mark.parametrize("moment", ["before", "after"])
def test_a_change_killed_at_its_commit_is_recorded_exactly_if_it_happened(moment, tmp_path):
    subjects = [Subject(c, str(tmp_path / c.name), None, tmp_path) for c in CASES]
    check_kill_and_rerun(subjects, moment)


def test_the_next_command_of_any_kind_writes_the_event_file_a_killed_change_left(tmp_path):
    """Killed after its commit, an exclude left its event in spans.json only; the next command
    that takes the lease — here a promote, nothing to do with spans — writes its file."""
    (exclude,) = [c for c in CASES if c.name == "exclude"]
    subject = Subject(exclude, str(tmp_path / "exclude"), None, tmp_path)
    kill_at_pause([subject], "after")
    (event,) = subject.events()
    assert not subject.has_file(event)
    ok("registry", "promote", subject.url, "2")  # waits for the killed command's lease
    assert subject.has_file(event) and subject.events() == [event]
    assert all(subject.has_file(e) for e in subject.history())


def test_on_s3_a_change_killed_after_its_commit_is_recorded_and_its_rerun_writes_the_file(
    endpoint,  # noqa: F811
    tmp_path,
):
    """Both commit documents (spans.json, registry.json) through conditional writes on S3."""
    import s3fs

    options = {"endpoint_url": endpoint, "key": KEY, "secret": SECRET}
    s3fs.S3FileSystem(**{"endpoint_url": endpoint, "key": KEY, "secret": SECRET}).mkdir("dlr-ev")
    cases = [c for c in CASES if c.name in ("exclude", "gc-versions", "gc-spans")]
    subjects = [Subject(c, f"s3://dlr-ev/{c.name}", options, tmp_path) for c in cases]
    check_kill_and_rerun(subjects, "after")
