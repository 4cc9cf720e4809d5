"""What the benchmark scripts share: datasets, the scale option, machine conditions, the load
meter, peak memory, and how dask-ml and scikit-learn are given their data.

Every benchmark runs at full scale by default (4M × 64 float32, the figures in README.md).
``--quick`` or ``DLR_BENCH_SCALE=0.01`` (any factor) shrinks every dataset and time budget, to
check on a busy machine that a script runs end to end; such figures mean nothing.
"""

import os
import platform
import statistics
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import psutil
import threadpoolctl
import zarr

from dlr.dataset import open_dataset
from dlr.errors import DataError
from dlr.synthetic import make_dataset

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "bench-data"
CHUNK_SAMPLES = 131_072
GB = 1e9
MB = 1e6
QUICK_SCALE = 0.01
#: Codecs of the benchmark datasets: dlr's own (``dlr make-data``: blosc-lz4 + crc32c) and
#: zarr 3's defaults (zstd level 0, no checksum), as data written by the rest of the ecosystem.
CODECS = {"dlr": "blosc-lz4 + crc32c (dlr make-data)", "zarr-default": "zstd (zarr 3 defaults)"}


# ------------------------------------------------------------------------------------- scale


def add_scale_options(parser) -> None:
    """``--scale F`` (default: ``DLR_BENCH_SCALE`` or 1) and ``--quick`` (F = 0.01)."""
    parser.add_argument(
        "--scale",
        type=float,
        default=float(os.environ.get("DLR_BENCH_SCALE", "1")),
        help="multiply every dataset size and time budget by this (default: $DLR_BENCH_SCALE "
        "or 1); figures below 1 only check that the script runs",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"--scale {QUICK_SCALE}, one run per measurement, no waiting for a quiet machine",
    )


def apply_scale(args) -> float:
    """Resolve ``--quick`` into ``args.scale``; returns it."""
    if args.quick:
        args.scale = QUICK_SCALE
    if not args.scale > 0:
        raise SystemExit(f"--scale must be positive, got {args.scale}")
    return args.scale


def scaled(n: int, scale: float, minimum: int = 1) -> int:
    return max(minimum, int(round(n * scale)))


def chunk_samples_for(m: int) -> int:
    """131072 samples per chunk, as the full-scale figures; fewer for small (scaled) data, so
    that there are still ≥ 8 chunks to spread over the threads."""
    return CHUNK_SAMPLES if m >= 8 * CHUNK_SAMPLES else max(512, m // 8)


# ---------------------------------------------------------------------------------- datasets


def dataset_path(directory: Path, m: int, n: int, codec: str = "dlr") -> Path:
    suffix = "" if codec == "dlr" else f"-{codec}"
    return directory / f"lr-{m}x{n}-float32{suffix}.zarr"


def ensure_dataset(directory: Path, m: int, n: int, codec: str = "dlr") -> Path:
    """The float32 dataset of m samples × n features in ``directory``, made unless present.

    ``codec="zarr-default"`` holds the same values as the ``dlr`` dataset (copied chunk by
    chunk from it), written by zarr-python with its defaults: the contenders meet the same
    optimum on both, and only the decoding differs.
    """
    path = dataset_path(directory, m, n, codec)
    chunk = chunk_samples_for(m)
    if path.exists():
        try:
            ds = open_dataset(str(path))
            if (ds.n_samples, ds.n_features, ds.chunk_samples) == (m, n, chunk):
                print(f"reusing  {path}")
                return path
        except DataError:
            pass
    if codec == "dlr":
        print(f"creating {path} ...", end=" ", flush=True)
        started = time.perf_counter()
        make_dataset(str(path), m, n, chunk_samples=chunk, dtype="float32", overwrite=True)
    else:
        source = ensure_dataset(directory, m, n, "dlr")
        print(f"creating {path} ...", end=" ", flush=True)
        started = time.perf_counter()
        copy_with_zarr_defaults(source, path, chunk)
    print(f"{time.perf_counter() - started:.1f}s")
    return path


def copy_with_zarr_defaults(source: Path, target: Path, chunk: int) -> None:
    """Copy the dataset at ``source`` to ``target`` as zarr-python writes it by default
    (``zarr.create_array`` with only shape, chunks, dtype and dimension names given)."""
    src = zarr.open_group(str(source), mode="r")
    group = zarr.open_group(str(target), mode="w", attributes=dict(src.attrs))
    x, y = src["X"], src["y"]
    xa = group.create_array(
        "X",
        shape=x.shape,
        chunks=(chunk, x.shape[1]),
        dtype=x.dtype,
        dimension_names=("sample", "feature"),
    )
    ya = group.create_array(
        "y", shape=y.shape, chunks=(chunk,), dtype=y.dtype, dimension_names=("sample",)
    )
    for start in range(0, x.shape[0], chunk):
        xa[start : start + chunk] = x[start : start + chunk]
        ya[start : start + chunk] = y[start : start + chunk]


def describe_dataset(path: Path, codec: str) -> str:
    ds = open_dataset(str(path))
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    return (
        f"{rel}: {ds.n_samples} × {ds.n_features} {ds.x.dtype}, {ds.n_chunks} chunks of "
        f"{ds.chunk_samples}, {ds.n_samples * ds.n_features * 4 / GB:.2f} GB decoded, "
        f"{size / GB:.2f} GB on disk ({CODECS[codec]}), local disk"
    )


# ------------------------------------------------------------------------ machine, conditions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def dlr_checkout() -> str:
    """Where dlr is imported from, and its git commit and state when it is a checkout."""
    import dlr

    where = Path(dlr.__file__).resolve().parent
    git = ["git", "-C", str(where)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return f"{dlr.__version__} from {where} (not a git checkout)"
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True
    ).stdout.split("\n")
    state = f", {sum(1 for line in changed if line)} files changed" if any(changed) else ", clean"
    return f"{dlr.__version__} from {where}, commit {head.stdout.strip()}{state}"


def print_platform(versions: dict[str, str], scale: float = 1.0) -> None:
    """The machine, the dlr checkout, library ``versions`` (name → version), BLAS and its env."""
    vm = psutil.virtual_memory()
    print("== machine and conditions")
    if scale < 1:
        print(f"SCALE     {scale:g}: a reduced run to check the script; the figures mean nothing")
    elif scale > 1:
        print(f"SCALE     {scale:g}: every dataset {scale:g}× the default size")
    print(
        f"cpu       {cpu_model()}, {os.cpu_count()} logical cores "
        f"({psutil.cpu_count(logical=False)} physical)"
    )
    print(f"memory    {vm.total / GB:.1f} GB total, {vm.available / GB:.1f} GB available")
    print(f"os        {platform.platform()}, load average {os.getloadavg()[0]:.2f} (1 min)")
    print(f"dlr       {dlr_checkout()}")
    listed = ", ".join(f"{name} {version}" for name, version in versions.items())
    print(f"versions  python {platform.python_version()}, {listed}")
    for lib in threadpoolctl.threadpool_info():
        if lib["user_api"] == "blas":
            print(
                f"blas      {lib['internal_api']} {lib['version']} "
                f"({Path(lib['filepath']).parent.name}), "
                f"{lib['num_threads']} threads, arch {lib.get('architecture')}"
            )
    env = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_", "MKL_"))}
    print(f"env       {' '.join(f'{k}={v}' for k, v in sorted(env.items())) or 'none set'}")


class Load:
    """CPU used by other processes, and stolen by the hypervisor, while the block runs (cores).

    Other work on this 2-core machine (or on the host) changes every figure; this says when.
    """

    def __enter__(self):
        self.started = time.perf_counter()
        self.system, self.own = psutil.cpu_times(), psutil.Process().cpu_times()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.started
        system, own = psutil.cpu_times(), psutil.Process().cpu_times()

        def busy(t):
            return t.user + t.nice + t.system + t.irq + t.softirq

        def mine(t):  # this process, and the children it has waited for
            return t.user + t.system + t.children_user + t.children_system

        used = busy(system) - busy(self.system) - (mine(own) - mine(self.own))
        self.others = max(0.0, used) / wall
        self.steal = (getattr(system, "steal", 0.0) - getattr(self.system, "steal", 0.0)) / wall
        return False

    def __str__(self):
        return f"{self.others:.2f}/{self.steal:.2f}"


def wait_until_quiet(limit: float, threshold: float = 0.25) -> float:
    """Wait, up to ``limit`` seconds, until other processes use under ``threshold`` cores over 2
    seconds (the machine is shared: a test suite running next to the benchmark skews it).
    Returns the seconds waited."""
    if limit <= 0:
        return 0.0
    started = time.perf_counter()
    while True:
        with Load() as load:
            time.sleep(2)
        waited = time.perf_counter() - started
        if load.others < threshold or waited >= limit:
            return waited


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (VmHWM; ru_maxrss would include the
    parent's size, inherited across fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# ------------------------------------------------------------- how the peers get their data

#: BLAS settings dask-ml is timed under; its best counts. ``None``: BLAS's default (a thread
#: per core, in each of dask's threads: oversubscribed); 1: one BLAS thread per dask thread.
DASK_ML_BLAS = {"default BLAS": None, "1 BLAS thread": 1}


def blas_threads(limit: int | None):
    """A context limiting BLAS to ``limit`` threads in this process (None: leave it)."""
    if limit is None:
        return nullcontext()
    return threadpoolctl.threadpool_limits(limits=limit, user_api="blas")


def dask_arrays(path: str, *, persist: bool, store=None):
    """X and y of the dataset as dask arrays chunked like the store; with ``persist``, read,
    decoded and kept in memory (``dask.persist`` on the threaded scheduler) before returning.
    ``store`` replaces the path (e.g. a read-counting wrapper)."""
    import dask
    import dask.array as da

    group = zarr.open_group(store if store is not None else path, mode="r")
    X, y = da.from_zarr(group["X"]), da.from_zarr(group["y"])
    if persist:
        X, y = dask.persist(X, y)
    return X, y


def load_into_memory(path: str) -> tuple[np.ndarray, np.ndarray]:
    """X and y of the dataset in memory, the fastest way a scikit-learn user could: into
    preallocated arrays (``get_basic_selection(out=...)``: zarr decodes straight into them, no
    temporary copy) of 4 KiB pages (as dlr's own cache: NumPy's transparent huge pages cost
    1.6–2.3 s/GB to fault in on this VM)."""
    from zarr.core.buffer.cpu import NDBuffer

    from dlr.memory import small_page_empty

    group = zarr.open_group(path, mode="r")
    out = []
    for name in ("X", "y"):
        arr = group[name]
        buffer = small_page_empty(arr.shape, arr.dtype)
        arr.get_basic_selection(..., out=NDBuffer(buffer))
        out.append(buffer)
    return out[0], out[1]


def pass_seconds(engine, iters: int) -> float:
    """Median time of one binary loss-and-gradient pass of a :class:`dlr.engine.Engine` (after
    one warm-up pass)."""
    from dlr.engine import Labels  # not at import: the cold-start children time their imports

    theta = np.full((1, engine.source.n_features + 1), 0.01)
    labels = Labels(np.array([0, 1]))
    engine.partials(theta, labels)
    times = []
    for _ in range(iters):
        started = time.perf_counter()
        engine.partials(theta, labels)
        times.append(time.perf_counter() - started)
    return statistics.median(times)
