"""The registry: immutable versions, aliases moved by compare-and-swap with a history of every
move, REG@alias wherever a model path goes, rollback, gc, and readers that never see a partial
model while the champion moves."""

import json
import os
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

import dlr
from dlr.errors import DlrError, ModelError
from dlr.lease import Lease
from dlr.registry import Registry, RegistryConflict, resolve_model_path
from dlr.spans import ingest
from dlr.spanset import training_source
from tests.registry_support import fitted, ok, refused, table


@pytest.fixture
def registry(tmp_path):
    """A registry with two spans (day0 and day1) and versions 1..3 (1 and 2 on day0 only)."""
    registry = Registry.create_or_open(str(tmp_path / "reg"))
    for day in range(2):
        path = tmp_path / f"day{day}.parquet"
        pq.write_table(table(600, seed=day), path)
        ingest([str(path)], registry, label="label", chunk_samples=256)
    spans = registry.spans()
    for n, use in enumerate([spans[:1], spans[:1], spans], start=1):
        model = fitted(training_source(registry, use), max_iter=n)
        lineage = {
            "spans": [s.id for s in use],
            "decision": "promoted",
            "metrics": {"pinned": {"log_loss": 0.5 / n, "roc_auc": 0.7 + n / 100}},
        }
        assert registry.register_version(model, lineage) == n
    return registry


def move(registry, name, version, reason="test"):
    registry.move_alias(name, version, expected=registry.alias(name), run="t", reason=reason)


def damage(registry, version: int, name: str) -> None:
    """Flip the last byte of file ``name`` of ``version``."""
    path = os.path.join(registry.model_url(version), name)
    damaged = bytearray(open(path, "rb").read())
    damaged[-1] ^= 0xFF
    with open(path, "wb") as f:
        f.write(damaged)


def test_versions_are_complete_numbered_directories_with_their_lineage(registry):
    versions = registry.versions()
    assert [v.version for v in versions] == [1, 2, 3]
    assert versions[2].lineage["spans"] == [s.id for s in registry.spans()]
    assert versions[0].lineage["version"] == 1 and versions[0].created_at.endswith("Z")
    assert sorted(os.listdir(os.path.join(registry.url, "versions"))) == ["1", "2", "3"]
    assert sorted(os.listdir(versions[0].url)) == [
        "coef.npy",
        "intercept.npy",
        "lineage.json",
        "model.json",
    ]
    with pytest.raises(DlrError, match="has no version 9"):
        registry.version(9)


def test_an_alias_moves_only_from_the_version_the_caller_expects(registry):
    registry.move_alias("champion", 1, expected=None, run="day-1", reason="first")
    with pytest.raises(RegistryConflict, match="points at version 1, not at nothing"):
        registry.move_alias("champion", 2, expected=None, run="day-2", reason="stale")
    registry.move_alias("champion", 2, expected=1, run="day-2", reason="better")
    assert registry.alias("champion") == 2 and registry.aliases() == {"champion": 2}
    assert registry.alias_record("champion")["previous"] == 1
    moves = [
        (e["alias"], e["from"], e["to"], e["run"], e["reason"])
        for e in registry.history()
        if e["event"] == "alias"
    ]
    assert moves == [("champion", None, 1, "day-1", "first"), ("champion", 1, 2, "day-2", "better")]
    registry.move_alias("champion", None, expected=2, run="t", reason="retired")
    assert registry.alias("champion") is None


@pytest.mark.parametrize("ref", ["@champion", "@2"])
def test_reg_at_alias_or_number_is_a_model_path_everywhere(ref, registry, tmp_path):
    move(registry, "champion", 2)
    path = f"{registry.url}{ref}"
    expected = dlr.load(registry.model_url(2))
    np.testing.assert_array_equal(dlr.load(path).coef_, expected.coef_)
    data = registry.spans()[1].train_url
    ok("predict", path, data, "--out", tmp_path / "proba.zarr")
    direct = ok("evaluate", registry.model_url(2), data, "--json")
    assert json.loads(ok("evaluate", path, data, "--json")) == json.loads(direct)
    ok("train", data, "--model", tmp_path / "warm", "--init", path, "--max-iter", "1", "--tol", "0")
    assert dlr.load(str(tmp_path / "warm")).n_features_in_ == 3


def test_unknown_references_are_clear_errors_and_other_at_signs_are_paths(registry, tmp_path):
    with pytest.raises(ModelError, match="has no alias 'champion' \\(aliases: none\\)"):
        dlr.load(f"{registry.url}@champion")
    with pytest.raises(DlrError, match="has no version 7"):
        dlr.load(f"{registry.url}@7")
    plain = str(tmp_path / "a@b")
    assert resolve_model_path(plain) == plain


def test_promote_and_rollback_go_back_to_the_previous_champion(registry):
    reg = registry.url
    assert ok("registry", "promote", reg, "1") == "champion: version - → 1\n"
    ok("registry", "promote", reg, "3", "--reason", "day 2 is better")
    assert ok("registry", "rollback", reg) == "champion: version 3 → 1 (rolled back)\n"
    assert registry.alias("champion") == 1
    ok("registry", "rollback", reg, "--to", "2")
    assert registry.alias("champion") == 2
    event = registry.history()[-1]
    assert (event["from"], event["to"], event["reason"]) == (1, 2, "rolled back by hand")
    assert event["by"].startswith("dlr registry rollback (")
    ok("registry", "promote", reg, "3", "--alias", "challenger")
    assert registry.aliases() == {"champion": 2, "challenger": 3}


def test_rollback_to_a_version_whose_checksums_fail_is_refused(registry):
    move(registry, "champion", 1)
    move(registry, "champion", 3)
    damage(registry, 1, "coef.npy")
    error = refused("registry", "rollback", registry.url)
    assert "refusing to roll back to version 1:" in error
    assert "does not match the checksum in model.json" in error
    assert registry.alias("champion") == 3


def test_promote_to_a_version_whose_checksums_fail_is_refused(registry):
    move(registry, "champion", 1)
    damage(registry, 3, "coef.npy")
    events = len(registry.history())
    error = refused("registry", "promote", registry.url, "3")
    assert "does not match the checksum in model.json" in error
    assert registry.alias("champion") == 1 and len(registry.history()) == events


def test_a_removed_alias_keeps_its_pointer_with_no_version(registry):
    move(registry, "challenger", 2)
    move(registry, "challenger", None, reason="withdrawn")
    assert registry.alias("challenger") is None and "challenger" not in registry.aliases()
    pointer = json.loads(open(os.path.join(registry.url, "aliases", "challenger.json")).read())
    assert (pointer["version"], pointer["previous"], pointer["reason"]) == (None, 2, "withdrawn")
    moves = [(e["from"], e["to"]) for e in registry.history() if e["event"] == "alias"]
    assert moves == [(None, 2), (2, None)]


def test_a_registry_command_waits_for_a_held_lease_or_says_who_holds_it(registry):
    with Lease.acquire(registry, owner="nightly", run_key="day-9", ttl=30):
        error = refused("registry", "promote", registry.url, "1", "--lease-wait", "0")
        assert "another run holds the registry lease (owner nightly, run day-9" in error
        assert registry.alias("champion") is None
    with Lease.acquire(registry, owner="nightly", run_key="day-10", ttl=30) as held:
        threading.Timer(0.5, held.release).start()
        started = time.monotonic()
        assert ok("registry", "promote", registry.url, "1", "--lease-wait", "20") == (
            "champion: version - → 1\n"
        )
        assert time.monotonic() - started >= 0.5  # it waited for the release
    assert registry.alias("champion") == 1


def test_list_json_gives_each_versions_aliases_decision_metrics_and_spans(registry, tmp_path):
    move(registry, "champion", 3)
    bare = Registry.create_or_open(str(tmp_path / "bare"))
    model = dlr.load(registry.model_url(1))
    bare.register_version(model, {})
    rows = json.loads(ok("registry", "list", registry.url, "--json"))
    assert [(r["version"], r["aliases"], r["decision"]) for r in rows] == [
        (1, [], "promoted"),
        (2, [], "promoted"),
        (3, ["champion"], "promoted"),
    ]
    assert rows[2]["metrics"] == {"log_loss": 0.5 / 3, "roc_auc": 0.73}
    assert rows[2]["spans"] == [s.id for s in registry.spans()]
    (row,) = json.loads(ok("registry", "list", bare.url, "--json"))
    assert (row["decision"], row["metrics"], row["spans"]) == (None, None, None)
    listing = ok("registry", "list", registry.url)
    assert "champion" in listing and "0.1667" in listing
    assert json.loads(ok("registry", "show", registry.url, "3"))["lineage"]["version"] == 3


def test_gc_keeps_aliased_versions_recent_moves_and_the_spans_kept_versions_used(registry):
    spans = registry.spans()
    for _ in range(3):  # versions 4, 5, 6
        registry.register_version(dlr.load(registry.model_url(3)), {"spans": [spans[1].id]})
    move(registry, "challenger", 4)
    move(registry, "champion", 1)
    move(registry, "champion", 2)  # the last move names 1 and 2
    registry.exclude_span(spans[0].id, "bad batch", by="t")
    out = ok("registry", "gc", registry.url, "--keep", "1")
    # kept: 6 (newest), 2 (champion) and 4 (challenger), 1 (named in the last move)
    assert [v.version for v in registry.versions()] == [1, 2, 4, 6]
    assert out.startswith("removed 2 version(s) 3, 5 and the data of 0 excluded span(s)")
    # span 0 is excluded but versions 1 and 2 trained on it: its data stays
    assert os.path.isdir(spans[0].train_url)
    move(registry, "champion", 6)
    move(registry, "champion", 4)
    registry.move_alias("challenger", None, expected=4, run="t", reason="r")
    out = ok("registry", "gc", registry.url, "--keep", "1")
    assert [v.version for v in registry.versions()] == [4, 6]
    assert f"excluded span(s) {spans[0].id}" in out
    assert not os.path.exists(spans[0].train_url) and not os.path.exists(spans[0].holdout_url)
    assert [s.id for s in registry.spans(include_excluded=True)] == [spans[1].id]
    day0 = os.path.join(os.path.dirname(registry.url), "day0.parquet")
    (again,) = ingest([day0], registry)  # still recognised: nothing changes
    assert not again.created


def test_spans_exclude_and_include_on_the_command_line(registry):
    span = registry.spans()[0]
    out = ok("registry", "exclude", registry.url, span.id[:10], "--reason", "labels shuffled")
    assert out == f"span {span.id} excluded: labels shuffled\n"
    listing = ok("registry", "spans", registry.url)
    assert "[excluded: labels shuffled]" in listing and span.source in listing
    assert [s.id for s in registry.spans()] == [registry.spans(True)[1].id]
    events = len(registry.history())
    again = ok("registry", "exclude", registry.url, span.id, "--reason", "labels shuffled")
    assert again == f"span {span.id} is already excluded; nothing changed: labels shuffled\n"
    ok("registry", "include", registry.url, span.id)
    assert len(registry.spans()) == 2
    again = ok("registry", "include", registry.url, span.id)
    assert again == f"span {span.id} is not excluded; nothing changed\n"
    assert len(registry.history()) == events + 1  # the include; neither rerun recorded a thing
    error = refused("registry", "exclude", registry.url, "zzzzzzzz", "--reason", "x")
    assert "has no committed span 'zzzzzzzz'" in error
    history = ok("registry", "history", registry.url)
    assert "exclude  span" in history and "labels shuffled" in history


def test_readers_see_the_old_champion_or_the_new_never_a_mix(registry):
    coefs = {n: dlr.load(registry.model_url(n)).coef_ for n in (1, 2)}
    move(registry, "champion", 1)
    seen, errors, stop = [], [], threading.Event()

    def poll():
        while not stop.is_set():
            try:
                coef = dlr.load(f"{registry.url}@champion").coef_
                seen.append(next(n for n, c in coefs.items() if np.array_equal(c, coef)))
            except Exception as e:  # noqa: BLE001 - any failure is what the test catches
                errors.append(e)

    readers = [threading.Thread(target=poll) for _ in range(2)]
    for r in readers:
        r.start()
    try:
        for i in range(40):
            move(registry, "champion", 2 if i % 2 == 0 else 1)
    finally:
        stop.set()
        for r in readers:
            r.join()
    assert errors == [] and set(seen) == {1, 2}
