"""Benchmark dlr's engine against the NumPy oracle, dask-ml and plain reads of the same chunks.

One run prints, side by side, the time per gradient-descent iteration (one pass) of

- dlr with its chunk cache (``cache_size="auto"``) and streaming (``cache_size=0``),
- the in-memory NumPy oracle (``dlr.oracle.gradients`` on float32 data, plus the update),
  in runs alternating with dlr cached's so that both meet the same conditions,
- dask-ml's ``LogisticRegression(solver="gradient_descent")``, streaming (``da.from_zarr``: every
  pass reads and decodes the store) and persisted (the arrays decoded once and kept in memory,
  as dlr's cache), each with BLAS's default threads and with one BLAS thread per dask thread;
- reads of the same chunks without the math: dlr's own (its decoder, the same tasks and threads
  as its streaming pass: what the math adds is dlr's overhead) and zarr-python's (what a user of
  plain zarr gets),

then the peak RSS of streaming training (``dlr train --cache-size 0``) on a small and a big
dataset, and a table of targets with PASS/FAIL. Streaming is compared with streaming, cached
with persisted, never across.

    python benchmarks/bench_engine.py [--dir bench-data] [--samples 4000000] [--features 64]
        [--big-samples 16000000] [--iters 5] [--quick | --scale F]
"""

import argparse
import gc
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask
import numcodecs
import numcodecs.blosc
import numpy as np
import zarr
from common import (  # the benchmarks directory is on sys.path when a script runs
    DASK_ML_BLAS,
    DATA_DIR,
    GB,
    MB,
    Load,
    add_scale_options,
    apply_scale,
    blas_threads,
    dask_arrays,
    describe_dataset,
    ensure_dataset,
    print_platform,
    scaled,
    wait_until_quiet,
)

from dlr.dataset import open_dataset
from dlr.engine import Engine, run_graph
from dlr.linalg import single_threaded_blas
from dlr.oracle import gradients
from dlr.sources import from_dataset

LEARNING_RATE = 0.1

#: Run in a child process: train with the CLI in-process, then print the peak RSS in kB.
#: VmHWM is the high-water mark of this process's own address space. getrusage's ru_maxrss is
#: not used: Linux carries it over from the pre-exec copy of the parent (this benchmark, holding
#: a GB or more), so every child would report at least the parent's size.
RSS_CHILD = """
import re, sys
from dlr.cli import main
main(sys.argv[1:], standalone_mode=False)
status = open("/proc/self/status").read()
print("VMHWM_KB", re.search(r"VmHWM:\\s*(\\d+) kB", status).group(1))
"""


# --------------------------------------------------------------------------------------- setup


def print_machine(args, paths: dict) -> None:
    import dask_glm
    import dask_ml

    print_platform(
        {
            "numpy": np.__version__,
            "dask": dask.__version__,
            "zarr": zarr.__version__,
            "numcodecs": numcodecs.__version__,
            "dask-ml": dask_ml.__version__,
            "dask-glm": dask_glm.__version__,
        },
        args.scale,
    )
    print(
        f"dask      threaded scheduler, {dask.config.get('num_workers', None) or os.cpu_count()}"
        " workers (default); dlr kernels pin BLAS to 1 thread, the oracle uses BLAS's default;"
        " dask-ml is timed with both (its best counts)"
    )
    print(
        f"zarr      async concurrency {zarr.config.get('async.concurrency')}, "
        f"blosc threads {numcodecs.blosc.get_nthreads()}"
    )
    for label, path in paths.items():
        print(f"data      {label}: {describe_dataset(path, 'dlr')}")
    print(
        f"timing    median and min of {args.iters} iterations after 1 warm-up; local disk, "
        "data files warm in the OS page cache"
    )
    print()


# ----------------------------------------------------------------------------------- timings


class Timing:
    """Seconds per iteration of one contender, and the load on the machine meanwhile."""

    def __init__(self, name: str, times: list[float], load: Load, note: str = ""):
        self.name, self.times, self.load, self.note = name, times, load, note

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)


def repeat(step, iters: int) -> list[float]:
    """Call ``step()`` once to warm up, then ``iters`` times; the timed durations."""
    step()
    times = []
    for _ in range(iters):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times


def dlr_stepper(engine: Engine):
    """One gradient-descent iteration as LogisticRegression.fit runs it, from w = 0, b = 0.

    ``engine.evaluate(w, b)`` (dlr up to commit ccad59a), or, for the engine without
    ``evaluate``, the unpenalized ``dlr.objective.Objective`` over it (after its summary pass).
    Returns ``step() -> loss``.
    """
    if hasattr(engine, "evaluate"):
        state = {"w": np.zeros(engine.source.n_features), "b": 0.0}

        def step():
            ev = engine.evaluate(state["w"], state["b"])
            state["w"] = state["w"] - LEARNING_RATE * ev.dw
            state["b"] = state["b"] - LEARNING_RATE * ev.db
            return ev.loss

        return step
    from dlr.objective import Objective

    objective = Objective(engine, engine.summarize(), C=np.inf)
    state = {"theta": np.zeros(objective.n_params)}

    def step():
        ev = objective(state["theta"])
        state["theta"] = state["theta"] - LEARNING_RATE * ev.grad
        return ev.loss

    return step


def bench_streaming(path: Path, iters: int) -> Timing:
    """Loss and gradient by the engine with no cache, plus the GD update, inside
    ``single_threaded_blas`` as in LogisticRegression.fit."""
    with single_threaded_blas():
        started = time.perf_counter()
        engine = Engine(from_dataset(open_dataset(str(path))), cache_size=0)
        step = dlr_stepper(engine)
        setup = time.perf_counter() - started
        with Load() as load:
            times = repeat(step, iters)
    return Timing("dlr streaming", times, load, f"0.00 GB cached, setup {setup:.1f}s")


def oracle_stepper(path: Path):
    """dlr.oracle.gradients on X (n, m) float32 C-contiguous in memory, plus the update.
    Returns ``(step() -> loss, note)``."""
    ds = open_dataset(str(path))
    samples_by_features = ds.x[:]
    X = np.ascontiguousarray(samples_by_features.T)
    del samples_by_features
    Y = ds.y[:].astype(np.float32)[None, :]
    state = {"w": np.zeros((X.shape[0], 1), dtype=np.float32), "b": np.float32(0)}

    def step():
        J, dw, db = gradients(X, Y, state["w"], state["b"])
        state["w"] = state["w"] - LEARNING_RATE * dw
        state["b"] = state["b"] - LEARNING_RATE * db
        assert state["w"].dtype == np.float32
        return J

    return step, f"X {X.shape} float32 in memory ({X.nbytes / GB:.2f} GB)"


def bench_cached_and_oracle(path: Path, iters: int, rounds: int = 3):
    """dlr cached and the NumPy oracle in alternating runs: ``rounds`` times, 1 + ``iters``
    iterations of dlr (BLAS pinned to one thread, as in LogisticRegression.fit), then 1 + ``iters``
    of the oracle (BLAS's default); the first of each run is a warm-up. On a shared VM the
    speed of memory drifts by ±10% from minute to minute; alternating keeps both under the same
    drift. (Alternating single iterations does not work: each workload then runs 30% slower
    right after the other.) Returns (dlr Timing, oracle Timing, dlr losses, oracle losses)."""
    started = time.perf_counter()
    engine = Engine(from_dataset(open_dataset(str(path))), cache_size="auto")
    with single_threaded_blas():
        dlr_step = dlr_stepper(engine)
    setup = time.perf_counter() - started
    oracle_step, oracle_note = oracle_stepper(path)
    losses = {"dlr": [], "oracle": []}
    times = {"dlr": [], "oracle": []}
    with Load() as load:
        for _ in range(rounds):
            with single_threaded_blas():
                times["dlr"] += repeat(lambda: losses["dlr"].append(dlr_step()), iters)
            times["oracle"] += repeat(lambda: losses["oracle"].append(oracle_step()), iters)
    note = (
        f"{engine.cached_bytes / GB:.2f} GB cached, setup {setup:.1f}s; "
        f"{rounds} runs alternating with the oracle's"
    )
    return (
        Timing("dlr cached", times["dlr"], load, note),
        Timing("NumPy oracle", times["oracle"], load, f"{oracle_note}; alternating with dlr"),
        losses["dlr"],
        losses["oracle"],
    )


def count_dask_glm_iterations():
    """Wrap dask-glm's line search (called once per gradient_descent iteration) with a counter."""
    import dask_glm.algorithms as algorithms

    original = algorithms.compute_stepsize_dask
    calls = [0]

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    algorithms.compute_stepsize_dask = counted
    return calls


def bench_dask_ml(
    path: Path, k1: int, k2: int, repeats: int, *, persist: bool, blas: str
) -> Timing:
    """Per-iteration time of dask-ml GD: (fit(max_iter=k2) − fit(max_iter=k1)) / (k2 − k1),
    each fit time the fastest of ``repeats``; on arrays streamed from the store or (``persist``)
    decoded once into memory beforehand (not timed), under the BLAS setting ``blas`` (a key of
    ``DASK_ML_BLAS``).

    dask_glm.algorithms.gradient_descent runs ``for k in range(max_iter)``, and with tol=0 it
    stops early only if the line search finds no decrease, so max_iter=k is k iterations (counted
    below to be sure). Each iteration computes g = Xᵀ(σ(Xβ) − y) and X·g (passes over X, which
    dask-ml standardizes and extends with an intercept column lazily), then a backtracking line
    search on the persisted Xβ and X·g. The setup (the mean/std pass over X, Xβ at k = 0, redone
    every 10 iterations) is the same in both fits and cancels in the difference.
    """
    from dask_ml.linear_model import LogisticRegression

    X, y = dask_arrays(str(path), persist=persist)
    calls = count_dask_glm_iterations()
    fits = {k1: math.inf, k2: math.inf}
    with Load() as load, warnings.catch_warnings(), blas_threads(DASK_ML_BLAS[blas]):
        # dask-glm's sigmoid is 1 / (1 + exp(-x)): it overflows, harmlessly, for large |x|
        warnings.filterwarnings("ignore", "overflow encountered in exp", RuntimeWarning)
        for _ in range(repeats):
            for k in (k1, k2):
                calls[0] = 0
                model = LogisticRegression(solver="gradient_descent", max_iter=k, tol=0.0)
                started = time.perf_counter()
                model.fit(X, y)
                fits[k] = min(fits[k], time.perf_counter() - started)
                if calls[0] != k:
                    raise RuntimeError(f"dask-ml ran {calls[0]} iterations for max_iter={k}")
                gc.collect()
    per_iter = (fits[k2] - fits[k1]) / (k2 - k1)
    note = (
        f"(fit max_iter={k2}: {fits[k2]:.1f}s − max_iter={k1}: {fits[k1]:.1f}s) / {k2 - k1}, "
        f"best of {repeats}"
    )
    how = "persisted" if persist else "streaming"
    return Timing(f"dask-ml gd {how}, {blas}", [per_iter], load, note)


def _chunk_samples(x, y, s) -> int:
    return len(y)


def bench_dlr_read(path: Path, iters: int) -> Timing:
    """dlr's own read and decode of every chunk of X and y, without the math: the expressions
    and tasks of a streaming pass on the same scheduler and threads, each task returning only
    the chunk's length. A streaming pass over this is what the math costs (dlr's overhead)."""
    source = from_dataset(open_dataset(str(path)))

    def step():
        dsk, keys = dict(source.graph), []
        name = f"dlr-read-{uuid.uuid4().hex[:8]}"
        for i in range(source.n_chunks):
            keys.append((name, i))
            dsk[keys[-1]] = (_chunk_samples, *source.exprs(i))
        assert sum(run_graph(dsk, keys)) == source.n_samples

    with Load() as load:
        times = repeat(step, iters)
    return Timing("dlr read (no math)", times, load, "dlr's decoder, its tasks and threads")


def bench_zarr_whole(path: Path, iters: int) -> Timing:
    """Read and decode all of X and y with ``arr[:]`` (zarr's own async concurrency)."""
    group = zarr.open_group(str(path), mode="r")
    x, y = group["X"], group["y"]

    def step():
        x[:]
        y[:]

    with Load() as load:
        times = repeat(step, iters)
    return Timing("zarr-python read, arr[:]", times, load, "X[:] and y[:], results dropped")


def bench_zarr_chunks(path: Path, iters: int, threads: int = 2) -> Timing:
    """Read and decode every chunk of X and y as ``arr[s:e]``, ``threads`` chunks at a time."""
    group = zarr.open_group(str(path), mode="r")
    x, y = group["X"], group["y"]
    m, c = x.shape[0], x.chunks[0]
    bounds = [(s, min(s + c, m)) for s in range(0, m, c)]

    def read(bound):
        s, e = bound
        return x[s:e].shape[0] + y[s:e].shape[0]

    with ThreadPoolExecutor(max_workers=threads) as pool:

        def step():
            assert sum(pool.map(read, bounds)) == 2 * m

        with Load() as load:
            times = repeat(step, iters)
    note = f"{len(bounds)} chunks of X and y, as dlr streams them"
    return Timing(f"zarr-python read, {threads} thr × arr[s:e]", times, load, note)


# ----------------------------------------------------------------------------------------- RSS


def peak_rss_train(data: Path, model: Path, max_iter: int) -> tuple[float, float, Load]:
    """Peak RSS (bytes), wall time and machine load of ``dlr train --cache-size 0`` in a fresh
    process."""
    argv = [
        "-q",
        "train",
        str(data),
        "--model",
        str(model),
        "--cache-size",
        "0",
        "--max-iter",
        str(max_iter),
        "--tol",
        "0",
        "--overwrite",
    ]
    started = time.perf_counter()
    with Load() as load:
        done = subprocess.run(
            [sys.executable, "-c", RSS_CHILD, *argv], capture_output=True, text=True, check=False
        )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"dlr train failed ({done.returncode}):\n{done.stderr}")
    kb = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("VMHWM_KB"))
    return int(kb) * 1024, seconds, load


# -------------------------------------------------------------------------------------- report


def print_timings(timings: list[Timing], decoded_bytes: int) -> None:
    print("== seconds per iteration (one full pass over the data)")
    print("GB/s: decoded X and y per median second; load: cores used by other processes / stolen")
    print(f"{'contender':38s} {'median':>8s} {'min':>8s} {'GB/s':>6s} {'load':>9s}  notes")
    for t in timings:
        rate = decoded_bytes / GB / t.median
        print(f"{t.name:38s} {t.median:8.3f} {t.min:8.3f} {rate:6.2f} {t.load!s:>9s}  {t.note}")
    print()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_targets(rows: list[tuple[str, str, str, bool]]) -> None:
    print("== targets")
    print(f"{'figure':40s} {'value':>10s}  {'target':12s} result")
    for name, value, target, ok in rows:
        print(f"{name:40s} {value:>10s}  {target:12s} {verdict(ok)}")


def target_rows(args, t: dict, rss: dict) -> list:
    """(figure, value, target, passed) for the final table, from the timings ``t`` by role."""
    cached_ratio = t["cached"].median / t["oracle"].median
    overhead = t["streaming"].median / t["dlr read"].median
    over_zarr = t["streaming"].median / t["zarr read"].median
    over_stream = t["dask-ml streaming"].median / t["streaming"].median
    over_cached = t["dask-ml persisted"].median / t["cached"].median
    rss_gap = abs(rss["big"] - rss["small"]) / rss["small"]
    rows = [
        ("dlr cached / NumPy oracle", f"{cached_ratio:.2f}", "≤ 1.2", cached_ratio <= 1.2),
        ("dlr streaming / dlr read (overhead)", f"{overhead:.2f}", "≤ 1.1", overhead <= 1.1),
        (
            "dlr streaming / zarr-python read (user)",
            f"{over_zarr:.2f}",
            "≤ 1.15",
            over_zarr <= 1.15,
        ),
        (
            "dask-ml streaming best / dlr streaming",
            f"{over_stream:.1f}",
            "≥ 10",
            over_stream >= 10,
        ),
        (
            "dask-ml persisted best / dlr cached",
            f"{over_cached:.1f}",
            "≥ 10",
            over_cached >= 10,
        ),
    ]
    for label, samples in (("small", args.samples), ("big", args.big_samples)):
        size = samples * args.features * 4 / GB
        rows.append(
            (
                f"peak RSS streaming, {size:.2f} GB data",
                f"{rss[label] / MB:.0f} MB",
                "< 500 MB",
                rss[label] < 500 * MB,
            )
        )
    rows.append(("peak RSS big vs small", f"{rss_gap:.1%}", "within 10%", rss_gap <= 0.10))
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--dir",
        default=str(DATA_DIR),
        help="where the datasets (and scratch models) live (default: bench-data/)",
    )
    p.add_argument("--samples", type=int, default=4_000_000, help="before --scale")
    p.add_argument("--features", type=int, default=64)
    p.add_argument(
        "--big-samples",
        type=int,
        default=16_000_000,
        help="samples of the big dataset used for the memory test, before --scale",
    )
    p.add_argument("--iters", type=int, default=5, help="timed iterations after 1 warm-up")
    p.add_argument(
        "--dask-ml-iters",
        type=int,
        nargs=2,
        default=(2, 4),
        metavar=("K1", "K2"),
        help="dask-ml max_iter values whose fit times are differenced",
    )
    p.add_argument(
        "--dask-ml-repeats", type=int, default=2, help="fits per max_iter; the fastest counts"
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=300,
        help="before each measurement, wait up to this many seconds for other processes to idle",
    )
    p.add_argument("--rss-iters", type=int, default=3, help="--max-iter of the RSS training runs")
    add_scale_options(p)
    args = p.parse_args(argv)
    scale = apply_scale(args)
    args.samples = scaled(args.samples, scale, 4096)
    args.big_samples = scaled(args.big_samples, scale, 4 * 4096)
    if args.quick:
        args.iters, args.dask_ml_repeats, args.quiet_wait, args.rss_iters = 1, 1, 0, 1
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    directory = Path(args.dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    print("== datasets")
    small = ensure_dataset(directory, args.samples, args.features)
    big = ensure_dataset(directory, args.big_samples, args.features)
    print()
    print_machine(args, {"small": small, "big": big})

    def quiet():
        gc.collect()
        waited = wait_until_quiet(args.quiet_wait)
        if waited > 3:
            print(f"(waited {waited:.0f}s for other processes to go quiet)")

    timings = {}
    quiet()
    timings["zarr arr[:]"] = bench_zarr_whole(small, args.iters)
    quiet()
    timings["zarr chunks"] = bench_zarr_chunks(small, args.iters)
    quiet()
    timings["dlr read"] = bench_dlr_read(small, args.iters)
    quiet()
    timings["streaming"] = bench_streaming(small, args.iters)
    quiet()
    timings["cached"], timings["oracle"], dlr_losses, oracle_losses = bench_cached_and_oracle(
        small, args.iters
    )
    dask_ml = []
    for persist in (False, True):
        for blas in DASK_ML_BLAS:
            quiet()
            dask_ml.append(
                bench_dask_ml(
                    small, *args.dask_ml_iters, args.dask_ml_repeats, persist=persist, blas=blas
                )
            )
    decoded = args.samples * args.features * 4 + args.samples
    print_timings([*timings.values(), *dask_ml], decoded)
    gap = max(abs(a - b) / abs(b) for a, b in zip(dlr_losses, oracle_losses, strict=True))
    print(
        f"check: dlr cached and the oracle made the same {len(dlr_losses)} GD steps; "
        f"largest relative loss difference {gap:.1e} (float64 vs float32 arithmetic)"
    )
    print()

    print(
        f"== peak RSS of `dlr train --cache-size 0 --max-iter {args.rss_iters} --tol 0`, "
        "each in a fresh process"
    )
    rss = {}
    for label, data in (("small", small), ("big", big)):
        quiet()
        rss[label], seconds, load = peak_rss_train(
            data, directory / f"model-{label}", args.rss_iters
        )
        print(
            f"{label:6s} {data.name:32s} peak RSS {rss[label] / MB:6.1f} MB, wall {seconds:5.1f}s "
            f"(imports and the validating pass included), load {load}"
        )
    print()

    def best(group):
        return min(group, key=lambda t: t.median)

    timings["zarr read"] = best([timings["zarr arr[:]"], timings["zarr chunks"]])
    timings["dask-ml streaming"] = best(dask_ml[:2])
    timings["dask-ml persisted"] = best(dask_ml[2:])
    for role in ("zarr read", "dask-ml streaming", "dask-ml persisted"):
        print(f"{role + ' best:':20s} {timings[role].name}")
    print_targets(target_rows(args, timings, rss))


if __name__ == "__main__":
    main()
