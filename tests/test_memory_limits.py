"""Memory limits: ``cache_size="auto"`` budgets from the tighter of the host's memory and the
process's cgroup limit (v1 and v2), and on a cluster from each worker's; a run that cannot fit
says so before it starts.

The real tests run ``dlr train`` inside a memory-limited cgroup v1 created for the test (root
can create one; they are skipped, saying why, where it cannot). Their datasets repeat a block
of 128 distinct rows (with labels drawn per sample), so that blosc stores them small: the page
cache — charged to the cgroup too — then holds the files, and a pass does not re-read a
gigabyte from disk. What is decoded into memory is the full size.
"""

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import dlr
from dlr import scoring
from dlr.cli import main
from dlr.dataset import create_arrays, open_dataset
from dlr.engine import place_chunks
from dlr.errors import DlrError
from dlr.memory import (
    STREAM_FACTOR,
    WORKERS_SHARE,
    Room,
    cgroup_limit,
    check_streaming_fits,
    parse_size,
    workers_memory_limit,
)
from dlr.sources import from_dataset
from tests.test_bad_input import assert_nothing_published

DLR_SCRIPT = str(Path(sys.executable).parent / "dlr")
V1_ROOT = Path("/sys/fs/cgroup/memory")
MB = 10**6


# --- cgroup files: fake trees ------------------------------------------------------------


def fake_tree(tmp_path, cgroup: str, mountinfo: str, files: dict) -> str:
    """A fake root with /proc/self/{cgroup,mountinfo} and cgroup files ({path: text})."""
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    (tmp_path / "proc/self/mountinfo").write_text(mountinfo)
    for path, text in files.items():
        (tmp_path / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path.lstrip("/")).write_text(text)
    return str(tmp_path)


V1_MOUNTS = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)
V2_MOUNTS = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"


def test_v1_limit_of_the_process_cgroup_with_its_working_set(tmp_path):
    base = "/sys/fs/cgroup/memory"
    root = fake_tree(
        tmp_path,
        "9:name=systemd:/\n4:memory:/pods/job\n0::/\n",
        V1_MOUNTS,
        {
            f"{base}/memory.limit_in_bytes": "9223372036854771712\n",  # the root: no limit
            f"{base}/pods/memory.limit_in_bytes": "9223372036854771712\n",
            f"{base}/pods/job/memory.limit_in_bytes": "314572800\n",
            f"{base}/pods/job/memory.usage_in_bytes": "120000000\n",
            f"{base}/pods/job/memory.stat": "cache 30000000\ntotal_inactive_file 20000000\n",
        },
    )
    limit = cgroup_limit(root)
    assert (limit.version, limit.limit, limit.used) == (1, 314572800, 100_000_000)
    assert limit.path == os.path.join(root, "sys/fs/cgroup/memory/pods/job")
    assert limit.free == 214572800


def test_v1_the_ancestor_with_the_least_room_binds(tmp_path):
    base = "/sys/fs/cgroup/memory"
    root = fake_tree(
        tmp_path,
        "4:memory,hugetlb:/pods/job\n",
        V1_MOUNTS,
        {
            f"{base}/pods/memory.limit_in_bytes": "1000000000\n",
            f"{base}/pods/memory.usage_in_bytes": "900000000\n",  # siblings use the rest
            f"{base}/pods/job/memory.limit_in_bytes": "500000000\n",
            f"{base}/pods/job/memory.usage_in_bytes": "50000000\n",
        },
    )
    limit = cgroup_limit(root)
    assert (limit.limit, limit.free) == (1_000_000_000, 100_000_000)
    assert limit.path.endswith("/pods")


def test_v2_memory_max_and_high_with_memory_current(tmp_path):
    base = "/sys/fs/cgroup"
    root = fake_tree(
        tmp_path,
        "0::/kubepods/pod1/ctr\n",
        V2_MOUNTS,
        {
            f"{base}/kubepods/memory.max": "max\n",
            f"{base}/kubepods/pod1/memory.max": "max\n",
            f"{base}/kubepods/pod1/ctr/memory.max": "1610612736\n",
            f"{base}/kubepods/pod1/ctr/memory.high": "max\n",
            f"{base}/kubepods/pod1/ctr/memory.current": "400000000\n",
            f"{base}/kubepods/pod1/ctr/memory.stat": "anon 300000000\ninactive_file 50000000\n",
        },
    )
    limit = cgroup_limit(root)
    assert (limit.version, limit.limit, limit.used) == (2, 1610612736, 350_000_000)
    assert limit.path.endswith("/kubepods/pod1/ctr")


def test_v2_in_a_cgroup_namespace_the_mount_is_the_process_cgroup(tmp_path):
    # A container with its own cgroup namespace: it sees itself at "/", mounted at the top.
    root = fake_tree(
        tmp_path,
        "0::/\n",
        V2_MOUNTS,
        {"/sys/fs/cgroup/memory.max": "268435456\n", "/sys/fs/cgroup/memory.current": "1000\n"},
    )
    assert cgroup_limit(root).limit == 268435456


def test_v1_mount_of_a_sub_hierarchy(tmp_path):
    # Docker without a cgroup namespace: /proc/self/cgroup names /docker/abc, and that part of
    # the hierarchy is what is mounted at /sys/fs/cgroup/memory.
    root = fake_tree(
        tmp_path,
        "4:memory:/docker/abc\n",
        "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        {"/sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912\n"},
    )
    assert cgroup_limit(root).limit == 536870912


@pytest.mark.parametrize(
    "files",
    [
        {"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"},
        {"/sys/fs/cgroup/unified/memory.max": "max\n"},
        {},
    ],
    ids=["v1-unlimited", "v2-max", "no-memory-files"],
)
def test_no_limit_is_none(tmp_path, files):
    root = fake_tree(tmp_path, "4:memory:/\n0::/\n", V1_MOUNTS, files)
    assert cgroup_limit(root) is None


def test_without_proc_files_there_is_no_limit(tmp_path):
    assert cgroup_limit(str(tmp_path)) is None


# --- budgets and placement -----------------------------------------------------------------


def test_streaming_needs_chunk_size_times_threads():
    room = Room(free=100 * MB, limit=300 * MB, kind="cgroup", why="the cgroup v1 limit")
    assert (
        check_streaming_fits(room, 10 * MB, 2, "chunk 0", "") == 100 * MB - STREAM_FACTOR * 20 * MB
    )
    with pytest.raises(DlrError) as e:
        check_streaming_fits(room, 20 * MB, 2, "chunk 3 of 'd.zarr' (samples 0–9)", "")
    assert str(e.value) == (
        "not enough memory to train: streaming chunk 3 of 'd.zarr' (samples 0–9) (20 MB "
        "decoded) on 2 threads needs about 120 MB (3× the chunk per thread), but the cgroup v1 "
        "limit leaves 100 MB; store the data in smaller chunks (dlr make-data --chunk-samples, "
        "or rechunk), use fewer threads (DASK_NUM_WORKERS=1), or raise the memory limit"
    )
    with pytest.raises(DlrError) as e:
        check_streaming_fits(room, 400 * MB, 1, "chunk 0", "tcp://127.0.0.1:1")
    assert str(e.value) == (
        "not enough memory to train on tcp://127.0.0.1:1: chunk 0 decodes to 400 MB, more than "
        "the cgroup v1 limit; store the data in smaller chunks (dlr make-data --chunk-samples, "
        "or rechunk), or raise the memory limit"
    )


def test_chunks_are_dealt_to_the_workers_that_have_room_for_them():
    sizes = [10, 10, 10, 10, 10, 10, 5]
    assert place_chunks(sizes, {"a": 30, "b": 15}) == {"a": [0, 2, 3], "b": [1]}
    assert place_chunks(sizes, {None: 25}) == {None: [0, 1]}
    assert place_chunks(sizes, {"a": 0, "b": 0}) == {}


def test_workers_share_a_cgroup_limit_but_not_the_hosts():
    cgroup = Room(free=1000 * MB, limit=1500 * MB, kind="cgroup", why="a cgroup limit")
    assert workers_memory_limit(2, cgroup) == 400 * MB
    host = Room(free=1000 * MB, limit=1500 * MB, kind="host", why="the host")
    assert workers_memory_limit(2, host) is None


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_predicting_or_evaluating_what_cannot_fit_is_refused_before_it_starts(
    tmp_path, monkeypatch, command
):
    data, model = tmp_path / "data.zarr", tmp_path / "model"
    tiled_dataset(data, 4000, 16, 1000)  # chunks of 1000 × (16 × 4 + 16) bytes decoded
    dlr.LogisticRegression().fit(str(data)).save(str(model))
    why = "the cgroup v1 memory limit of 300 MB (/sys/fs/cgroup/memory/job, 200 MB in use)"
    room = Room(free=100_000, limit=300 * MB, kind="cgroup", why=why)
    monkeypatch.setattr("dlr.engine.memory_room", lambda: room)
    expected = (
        f"not enough memory to {command}: streaming chunk 0 of '{data}' (samples 0–999) (80 kB "
        f"decoded) on 2 threads needs about 480 kB (3× the chunk per thread), but {why} leaves "
        "100 kB; store the data in smaller chunks (dlr make-data --chunk-samples, or rechunk), "
        "use fewer threads (DASK_NUM_WORKERS=1), or raise the memory limit"
    )
    out = ["--out", str(tmp_path / "p.zarr")] if command == "predict" else []
    with dask.config.set(num_workers=2):
        result = CliRunner().invoke(main, [command, str(model), str(data), *out])
        assert result.exit_code == 1 and result.stderr == f"dlr: error: {expected}\n"
        if command == "predict":
            source = from_dataset(open_dataset(str(data), y=None))
            with pytest.raises(DlrError) as e:
                scoring.write_probabilities(source, dlr.load(str(model)).theta_, out[1])
            assert str(e.value) == expected
            assert_nothing_published(tmp_path, "p.zarr")
            # the lazy predictions of the Python API are refused as they are made
            for method in ("decision_function", "predict_proba", "predict"):
                with pytest.raises(DlrError, match="^not enough memory to predict: streaming"):
                    getattr(dlr.load(str(model)), method)(str(data))
        else:
            source = from_dataset(open_dataset(str(data)))
            with pytest.raises(DlrError) as e:
                scoring.evaluate(source, dlr.load(str(model)).theta_, np.array([0, 1]))
            assert str(e.value) == expected


@pytest.mark.parametrize(
    "text, size",
    [("1.5G", 1_500_000_000), ("512MB", 512 * MB), ("2GiB", 2 << 30), ("0", 0), ("10k", 10**4)],
)
def test_sizes_with_or_without_b(text, size):
    assert parse_size(text) == size


# --- a real memory-limited cgroup ------------------------------------------------------------


def tiled_dataset(path: Path, n_samples: int, n_features: int, chunk_samples: int) -> int:
    """A dlr dataset whose X repeats 128 distinct standard-normal rows and whose labels are
    drawn per sample from a logistic model; returns its decoded size in bytes."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal((128, n_features)).astype(np.float32)
    w = rng.standard_normal(n_features) / np.sqrt(n_features)
    x = np.tile(base, (-(-chunk_samples // 128), 1))[:chunk_samples]
    p = 1 / (1 + np.exp(-(x.astype(np.float64) @ w)))
    group = zarr.open_group(str(path), mode="w")
    xa, ya = create_arrays(group, n_samples, n_features, chunk_samples)
    for start in range(0, n_samples, chunk_samples):
        stop = min(start + chunk_samples, n_samples)
        xa[start:stop] = x[: stop - start]
        ya[start:stop] = (rng.random(stop - start) < p[: stop - start]).astype(np.uint8)
    return xa.nbytes


@pytest.fixture
def cgroup():
    """Make a memory-limited cgroup v1: ``limit(bytes)`` gives its directory. Removed after,
    with any process the test left in it killed first."""
    made = []

    def limit(nbytes: int) -> Path:
        path = V1_ROOT / f"dlr-test-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
        except OSError as e:
            pytest.skip(f"cannot create a cgroup v1 memory cgroup under {V1_ROOT}: {e}")
        made.append(path)
        (path / "memory.limit_in_bytes").write_text(str(nbytes))
        return path

    yield limit
    for path in made:
        for pid in (path / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        for _ in range(100):
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.1)  # the killed processes are still exiting


def run_in(cgroup_dir: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``dlr ARGS`` as a process of the cgroup from its first instruction on."""
    command = f'echo $$ > {cgroup_dir}/cgroup.procs && exec "$0" "$@"'
    return subprocess.run(
        ["sh", "-c", command, DLR_SCRIPT, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """1 GB of float32 features when decoded, 4M samples × 64 in chunks of 8.4 MB."""
    data = tmp_path_factory.mktemp("memory-limits") / "data.zarr"
    assert tiled_dataset(data, 4_000_000, 64, 32768) > 10**9
    return data


def test_training_data_several_times_the_limit_with_default_settings(big, tmp_path, cgroup):
    limit = 300 * MB
    where = cgroup(limit)
    proc = run_in(where, "train", big, "--model", tmp_path / "model", "-v")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int((where / "memory.max_usage_in_bytes").read_text()) <= limit
    auto = [line for line in proc.stderr.splitlines() if "cache_size=auto" in line]
    assert len(auto) == 1 and f"the cgroup v1 memory limit of 300 MB ({where}" in auto[0], auto
    assert "(converged)" in proc.stdout and (tmp_path / "model/model.json").exists()


def test_local_workers_share_the_cgroup_limit_not_the_hosts_memory(tmp_path, cgroup):
    # dask's own "auto" would give each worker half of this host's memory; a worker process
    # with dlr imported takes about 290 MB.
    limit = 2000 * MB
    data = tmp_path / "data.zarr"
    tiled_dataset(data, 800_000, 64, 32768)
    args = ["train", data, "--model", tmp_path / "model", "--workers", 2, "--max-iter", 3, "-v"]
    proc = run_in(cgroup(limit), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    auto = [line for line in proc.stderr.splitlines() if "cache_size=auto" in line]
    assert len(auto) == 1 and "on each of 2 workers" in auto[0], auto
    worker_limit = re.search(r"worker's memory_limit of ([\d.]+) MB", auto[0])
    assert worker_limit and float(worker_limit.group(1)) * MB <= limit * WORKERS_SHARE / 2, auto
    assert (tmp_path / "model/model.json").exists()


def test_a_run_that_cannot_fit_says_so_before_it_starts(tmp_path, cgroup):
    data = tmp_path / "data.zarr"
    tiled_dataset(data, 20_000, 1000, 20_000)  # one chunk of 80 MB: 3 × 2 × 80 MB to stream
    where = cgroup(300 * MB)
    proc = run_in(where, "train", data, "--model", tmp_path / "model")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert re.fullmatch(
        r"dlr: error: not enough memory to train: streaming chunk 0 of '.*data.zarr' "
        r"\(samples 0–19999\) \(80.3 MB decoded\) on 2 threads needs about 482 MB \(3× the "
        rf"chunk per thread\), but the cgroup v1 memory limit of 300 MB \({where}, [\d.]+ MB "
        r"in use\) leaves [\d.]+ MB; store the data in smaller chunks \(dlr make-data "
        r"--chunk-samples, or rechunk\), use fewer threads \(DASK_NUM_WORKERS=1\), or raise "
        r"the memory limit\n",
        proc.stderr,
    ), proc.stderr
    assert not (tmp_path / "model").exists()
