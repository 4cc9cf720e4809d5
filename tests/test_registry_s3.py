"""The registry on an S3-protocol server process (moto): spans, versions, aliases and the lease
with real conditional writes; the same bits as a local registry."""

import json
import subprocess
import threading
import time

import numpy as np
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

import dlr
from dlr.errors import DlrError
from dlr.lease import Lease, LeaseHeld
from dlr.registry import Registry, RegistryConflict
from dlr.regstore import Conflict, Store
from dlr.spans import ingest
from dlr.spanset import training_source
from tests.registry_support import DLR, fitted, killed_at, ok, race_two_ingests, table, tree
from tests.test_object_storage import KEY, SECRET, endpoint  # noqa: F401 (the fixture)


@pytest.fixture(scope="module")
def storage(endpoint):  # noqa: F811
    import s3fs

    s3fs.S3FileSystem(endpoint_url=endpoint, key=KEY, secret=SECRET).mkdir("dlr-registry")
    return {"endpoint_url": endpoint, "key": KEY, "secret": SECRET}


def cli_options(storage) -> list[str]:
    return [f"--storage-option={k}={v}" for k, v in storage.items()]


def test_the_server_refuses_a_second_conditional_create_and_a_stale_swap(storage):
    store = Store("s3://dlr-registry/conditional", storage)
    tag = store.create("x.json", b"1")
    with pytest.raises(Conflict):
        store.create("x.json", b"2")  # If-None-Match: * → 412
    new_tag = store.swap("x.json", b"3", tag)
    with pytest.raises(Conflict):
        store.swap("x.json", b"4", tag)  # If-Match on an old ETag → 412
    assert store.read_tagged("x.json") == (b"3", new_tag)


def test_a_registry_on_s3_holds_the_same_spans_and_trains_the_same_model(storage, tmp_path):
    url = "s3://dlr-registry/reg"
    days = []
    for day in range(2):
        days.append(str(tmp_path / f"day{day}.parquet"))
        pq.write_table(table(700, seed=day), days[-1], row_group_size=200)
    remote = Registry.create_or_open(url, storage)
    local = Registry.create_or_open(str(tmp_path / "reg"))
    ok(
        "ingest",
        *days,
        "--registry",
        url,
        "--label",
        "label",
        "--chunk-samples",
        "256",
        *cli_options(storage),
    )
    ingest(days, local, label="label", chunk_samples=256)
    assert [s[:4] for s in remote.spans()] == [s[:4] for s in local.spans()]
    assert "already committed" in ok("ingest", days[1], "--registry", url, *cli_options(storage))
    assert len(remote.spans()) == 2

    models = [fitted(training_source(r, r.spans())) for r in (remote, local)]
    np.testing.assert_array_equal(models[0].coef_, models[1].coef_)
    np.testing.assert_array_equal(models[0].loss_history_, models[1].loss_history_)

    assert remote.register_version(models[0], {"spans": [s.id for s in remote.spans()]}) == 1
    assert remote.register_version(fitted(training_source(remote, remote.spans()[:1])), {}) == 2
    assert [v.version for v in remote.versions()] == [1, 2]
    with Lease.acquire(remote, owner="a", run_key="day-1", ttl=30) as lease:
        with pytest.raises(LeaseHeld, match="owner a, run day-1"):
            Lease.acquire(remote, owner="b", run_key="day-2")
        remote.move_alias("champion", 1, expected=None, run="day-1", reason="r", lease=lease)
    with pytest.raises(RegistryConflict, match="no longer held"):
        remote.move_alias("champion", 2, expected=1, run="day-1", reason="r", lease=lease)
    loaded = dlr.load(f"{url}@champion", storage)
    np.testing.assert_array_equal(loaded.coef_, models[0].coef_)
    listing = ok("registry", "list", url, "--json", *cli_options(storage))
    assert '"champion"' in listing


def test_sources_on_s3_become_the_spans_their_local_copies_make(storage, tmp_path):
    """Parquet (read a row group at a time, pre-buffered), CSV and .npy files (C order:
    streamed; Fortran order: read whole) on the server are the same spans, byte for byte, as
    the same files on local disk."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=storage["endpoint_url"], key=KEY, secret=SECRET)
    parquet, csv = tmp_path / "day1.parquet", tmp_path / "day2.csv"
    pq.write_table(table(3000, seed=31), parquet, row_group_size=700)
    pa_csv.write_csv(table(2000, seed=32), csv)
    files = [parquet, csv]
    for order in ("C", "F"):
        X = np.asarray(table(1500, seed=34 if order == "C" else 35).to_pandas(), order=order)
        files.append(tmp_path / f"day-{order}.npy")
        np.save(files[-1], X)  # columns x0 .. x3, the last the label (as a float)
    for path in files:
        fs.put(str(path), f"dlr-registry/sources/{path.name}")
    remote = [f"s3://dlr-registry/sources/{p.name}" for p in files]
    options = ("--chunk-samples", "256")
    for name, sources in (("from-s3", remote[:2]), ("from-disk", files[:2])):
        ok("ingest", *sources, "--registry", tmp_path / name, "--label", "label", *options,
           *cli_options(storage))  # fmt: skip
    for name, sources in (("npy-from-s3", remote[2:]), ("npy-from-disk", files[2:])):
        ok("ingest", *sources, "--registry", tmp_path / name, "--label", "x3", *options,
           *cli_options(storage))  # fmt: skip
    from_s3 = Registry(tmp_path / "from-s3").spans() + Registry(tmp_path / "npy-from-s3").spans()
    from_disk = Registry(tmp_path / "from-disk").spans()
    from_disk += Registry(tmp_path / "npy-from-disk").spans()
    assert [s.id for s in from_s3] == [s.id for s in from_disk] and len(from_s3) == 4
    for a, b in zip(from_s3, from_disk, strict=True):
        assert tree(a.train_url) == tree(b.train_url)
        assert tree(a.holdout_url) == tree(b.holdout_url)


def test_an_ingest_into_s3_killed_before_its_commit_leaves_nothing_and_the_rerun_cleans_up(
    storage, tmp_path
):
    """SIGKILL once the span is staged under staging/: no span is visible; the rerun removes
    the dead process's staged objects and commits the span once."""
    day = tmp_path / "day.parquet"
    pq.write_table(table(500, seed=33), day)
    url = "s3://dlr-registry/killed-ingest"
    Registry.create_or_open(url, storage)
    args = ["ingest", day, "--registry", url, "--label", "label", *cli_options(storage)]
    killed_at("before-commit", *args)
    registry = Registry(url, storage)
    assert registry.spans() == []
    assert any(n.startswith(".tmp-") for n in registry.store.listdir("staging"))
    assert ok(*args).startswith("committed span ")
    assert len(registry.spans()) == 1
    assert [n for n in registry.store.listdir("staging") if n.startswith(".tmp-")] == []


def test_a_live_holder_renews_its_lease_on_s3_past_its_ttl(storage):
    """Renewal is a conditional write (If-Match on the lease's ETag): it keeps the lease past
    several ttls, and nobody else can take it meanwhile."""
    registry = Registry.create_or_open("s3://dlr-registry/renewal", storage)
    with Lease.acquire(registry, owner="long run", run_key="r", ttl=1.0) as lease:
        first = json.loads(registry.store.read("lease.json"))["expires"]
        time.sleep(2.5)  # 2.5 ttls
        assert lease.held
        assert json.loads(registry.store.read("lease.json"))["expires"] > first + 1.0
        with pytest.raises(LeaseHeld):
            Lease.acquire(registry, owner="other", run_key="s")
    assert registry.store.read("lease.json") is None  # released


def test_an_expired_lease_on_s3_is_taken_over_by_exactly_one(storage):
    registry = Registry.create_or_open("s3://dlr-registry/takeover", storage)
    stale = Lease.acquire(registry, owner="crashed", run_key="r0", ttl=0.5)
    stale._stop.set()  # as if its process died: no more renewals
    stale._thread.join()
    import time

    time.sleep(0.6)
    results = []

    def take(i):
        try:
            results.append(Lease.acquire(registry, owner=f"t{i}", run_key=f"r{i}", ttl=30))
        except LeaseHeld:
            results.append(None)

    takers = [threading.Thread(target=take, args=(i,)) for i in range(4)]
    for t in takers:
        t.start()
    for t in takers:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0].took_over["owner"] == "crashed"
    assert not stale.held
    winners[0].release()


def test_readers_on_s3_see_the_old_champion_or_the_new_never_a_mix(storage, tmp_path):
    path = tmp_path / "day.parquet"
    pq.write_table(table(400, seed=5), path)
    registry = Registry.create_or_open("s3://dlr-registry/readers", storage)
    ingest([str(path)], registry, label="label")
    source = training_source(registry, registry.spans())
    for n in (1, 2):
        registry.register_version(fitted(source, max_iter=n), {})
    coefs = {n: dlr.load(registry.model_url(n), storage).coef_ for n in (1, 2)}
    registry.move_alias("champion", 1, expected=None, run="t", reason="r")
    seen, errors, stop = [], [], threading.Event()

    def poll():
        while not stop.is_set():
            try:
                coef = dlr.load(f"{registry.url}@champion", storage).coef_
                seen.append(next(n for n, c in coefs.items() if np.array_equal(c, coef)))
            except Exception as e:  # noqa: BLE001 - any failure is what the test catches
                errors.append(e)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for i in range(8):
            registry.move_alias("champion", 2 - i % 2, expected=1 + i % 2, run="t", reason="flip")
    finally:
        stop.set()
        reader.join()
    assert errors == [] and set(seen) == {1, 2}


def test_a_version_on_s3_is_invisible_until_its_model_json_and_its_number_is_never_reused(
    storage, tmp_path, monkeypatch
):
    """A version whose writer stopped before model.json (written last) is no version: not
    listed, not loadable; and a writer that picks its number anyway (another writer took it
    first) takes the next one instead of writing into it."""
    pq.write_table(table(400, seed=6), tmp_path / "day.parquet")
    registry = Registry.create_or_open("s3://dlr-registry/partial", storage)
    ingest([str(tmp_path / "day.parquet")], registry, label="label")
    registry.store.create("versions/1/lineage.json", b'{"version": 1}')  # model.json never came
    assert registry.versions() == []
    with pytest.raises(DlrError, match="has no version 1"):
        dlr.load(f"{registry.url}@1", storage)
    assert ok("registry", "list", registry.url, "--json", *cli_options(storage)).strip() == "[]"
    monkeypatch.setattr(Registry, "_version_numbers", lambda self: [])  # it cannot see 1
    model = fitted(training_source(registry, registry.spans()))
    assert registry.register_version(model, {}) == 2
    monkeypatch.undo()
    assert [v.version for v in registry.versions()] == [2]
    assert registry.store.read("versions/1/lineage.json") == b'{"version": 1}'  # untouched


def test_two_ingests_racing_on_an_s3_registry_commit_both_spans(storage, tmp_path):
    url = "s3://dlr-registry/race"
    days = []
    for day in range(3):
        days.append(str(tmp_path / f"day{day}.parquet"))
        pq.write_table(table(300, seed=30 + day), days[-1])
    ok("ingest", days[0], "--registry", url, "--label", "label", *cli_options(storage))
    outcomes = race_two_ingests(url, days[1], days[2], tmp_path, cli_options(storage))
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    spans = Registry(url, storage).spans()
    assert sorted(s.source for s in spans) == sorted(days)


def test_a_spans_commit_that_lost_a_race_on_s3_is_applied_again_not_lost(storage, tmp_path):
    """The commit is a compare-and-swap on S3 (If-Match): even a writer whose lease expired
    mid-commit cannot drop a span another process committed in between."""
    url = "s3://dlr-registry/cas"
    days = []
    for day in range(2):
        days.append(str(tmp_path / f"day{day}.parquet"))
        pq.write_table(table(300, seed=40 + day), days[-1])
    ok("ingest", days[0], "--registry", url, "--label", "label", *cli_options(storage))
    registry = Registry(url, storage)
    first = registry.spans()[0].id
    seen = []

    def exclude_the_first(entries):
        seen.append([e["id"] for e in entries])
        if len(seen) == 1:  # another process commits between this read and this write
            command = [DLR, "ingest", days[1], "--registry", url, *cli_options(storage)]
            subprocess.run(command, check=True, capture_output=True)
        for e in entries:
            if e["id"] == first:
                e["excluded"], e["reason"] = True, "test"
        return entries

    registry.update_span_entries(exclude_the_first)
    assert [len(ids) for ids in seen] == [1, 2]  # the lost swap was applied again
    spans = registry.spans(include_excluded=True)
    assert [(s.source, s.excluded) for s in spans] == [(days[0], True), (days[1], False)]
