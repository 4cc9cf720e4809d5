"""The registry lease: created exclusively, renewed while its holder lives, taken over once it
expires; a run that lost it cannot move an alias."""

import json
import os
import signal
import time

import pytest

from dlr.lease import Lease, LeaseHeld, read_lease
from dlr.registry import Registry, RegistryConflict
from dlr.regstore import Conflict, Store
from tests.registry_support import fitted, spawn

TTL = 2.0

#: A process that takes orders on stdin: "acquire" the lease, "publish" (move champion to 1).
RACER = """
import json, sys
from dlr.lease import Lease, LeaseHeld
from dlr.registry import Registry, RegistryConflict
registry, name = Registry(sys.argv[1]), sys.argv[2]
lease = None
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "acquire":
        try:
            lease = Lease.acquire(registry, owner=name, run_key=name, ttl=float(sys.argv[3]))
            print("won", json.dumps(lease.took_over), flush=True)
        except LeaseHeld as e:
            print("held", e.owner, flush=True)
    elif line.strip() == "publish":
        try:
            registry.move_alias("champion", 1, expected=None, run=name, reason="r", lease=lease)
            print("published", flush=True)
        except RegistryConflict as e:
            print("refused", e, flush=True)
"""


@pytest.fixture
def registry(tmp_path):
    return Registry.create_or_open(str(tmp_path / "reg"))


def test_an_exclusive_create_is_a_link_of_a_whole_file_and_survives_a_retried_nfs_link(
    tmp_path, monkeypatch
):
    """The lease (and every exclusive create) is written whole to a temporary file, then
    linked to its name: link(2) fails if the name exists, on NFS too (where flock excludes
    nothing), and the name never shows a half-written file. A link that NFS retried after its
    first attempt did link reports EEXIST; the temporary's link count (2) tells it apart."""
    store = Store(str(tmp_path / "reg"))
    store.create("a.json", b"first")
    with pytest.raises(Conflict):
        store.create("a.json", b"second")
    assert store.read("a.json") == b"first"
    link = os.link

    def retried_by_nfs(src, dst):
        link(src, dst)  # the first attempt did link; its reply was lost
        raise FileExistsError(17, "File exists")

    monkeypatch.setattr(os, "link", retried_by_nfs)
    store.create("b.json", b"mine")
    assert store.read("b.json") == b"mine"
    assert sorted(os.listdir(tmp_path / "reg")) == ["a.json", "b.json"]  # no temporary left


def test_the_lease_is_exclusive_until_released(registry):
    with Lease.acquire(registry, owner="first", run_key="day-1", ttl=30) as lease:
        assert lease.held and lease.took_over is None
        with pytest.raises(LeaseHeld, match=r"owner first, run day-1, expires 20"):
            Lease.acquire(registry, owner="second", run_key="day-2")
    assert read_lease(registry) is None
    with Lease.acquire(registry, owner="second", run_key="day-2") as lease:
        assert read_lease(registry)["run_key"] == "day-2"


def test_a_live_holder_renews_its_lease_past_its_ttl(registry):
    with Lease.acquire(registry, owner="long run", run_key="r", ttl=0.6) as lease:
        first_expiry = read_lease(registry)["expires"]
        time.sleep(1.5)  # 2.5 ttls
        assert lease.held
        assert read_lease(registry)["expires"] > first_expiry + 0.6
        with pytest.raises(LeaseHeld):
            Lease.acquire(registry, owner="other", run_key="s")


def test_waiting_for_the_lease_gets_it_once_released(registry):
    lease = Lease.acquire(registry, owner="a", run_key="a", ttl=30)
    start = time.monotonic()
    import threading

    threading.Timer(0.5, lease.release).start()
    with Lease.acquire(registry, owner="b", run_key="b", wait=10) as second:
        assert second.took_over is None
        assert time.monotonic() - start >= 0.5


def _say(process, line: str) -> str:
    process.stdin.write(line + "\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


def test_four_racing_processes_one_wins_takeover_after_a_kill_and_a_lost_lease_cannot_publish(
    registry, tmp_path
):
    from dlr.sources import from_arrays
    from tests.registry_support import table

    t = table(200, seed=0)
    X = t.select(["a", "b", "c"]).to_pandas().to_numpy()
    registry.register_version(fitted(from_arrays(X, t.column("label").to_numpy())), {})
    racers = [spawn(RACER, registry.url, f"racer-{i}", TTL) for i in range(4)]
    try:
        for p in racers:
            assert p.stdout.readline().strip() == "ready"
        for p in racers:  # all four at once
            p.stdin.write("acquire\n")
            p.stdin.flush()
        answers = [p.stdout.readline().split() for p in racers]
        winners = [i for i, a in enumerate(answers) if a[0] == "won"]
        assert len(winners) == 1, answers
        first = racers[winners[0]]
        assert all(a == ["held", f"racer-{winners[0]}"] for a in answers if a[0] != "won")

        first.send_signal(signal.SIGKILL)  # the holder dies holding the lease
        first.wait(timeout=30)
        others = [p for p in racers if p is not first]
        assert _say(others[0], "acquire") == f"held racer-{winners[0]}"  # not expired yet
        time.sleep(TTL + 0.1)
        answers = [_say(p, "acquire").split(" ", 1) for p in others]
        assert [a[0] for a in answers].count("won") == 1, answers
        second = others[[a[0] for a in answers].index("won")]
        took_over = json.loads(answers[[a[0] for a in answers].index("won")][1])
        assert took_over["owner"] == f"racer-{winners[0]}"

        second.send_signal(signal.SIGSTOP)  # paused (GC, swapped out...) past its expiry
        time.sleep(TTL + 0.1)
        with Lease.acquire(registry, owner="test", run_key="t", ttl=30) as mine:
            assert mine.took_over["run_key"] != "t"
            second.send_signal(signal.SIGCONT)
            answer = _say(second, "publish")
            assert answer.startswith("refused") and "is no longer held" in answer
            assert registry.alias("champion") is None
            registry.move_alias("champion", 1, expected=None, run="t", reason="r", lease=mine)
        with pytest.raises(RegistryConflict, match="is no longer held"):
            registry.move_alias("champion", None, expected=1, run="t", reason="r", lease=mine)
    finally:
        for p in racers:
            p.kill()
            p.communicate()
