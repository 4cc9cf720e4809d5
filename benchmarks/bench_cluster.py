"""Benchmark dlr on real multi-process clusters: scaling, per-task overhead, checkpoint cost.

One run prints, side by side:

1. the time of one gradient pass over the 4 GB float32 dataset (16M × 64, streamed from zarr)
   with 1 and 2 worker processes of one thread each (``dlr.cluster.local_cluster``: separate
   ``dask scheduler`` / ``dask worker`` processes), and the scaling efficiency t₁ / (2·t₂);
2. the scheduler overhead per chunk task: passes over the same 64 MB of cached data split into
   16 … 1024 chunks, on the local threaded scheduler and on a 2-worker cluster, with the slope
   of pass time against chunk count (seconds per extra task);
3. the cost of checkpointing every iteration (L-BFGS and Newton states) against an iteration of
   the 4 GB dataset, target < 2 % (and, for scale, against a cached pass over the 1 GB one).

    python benchmarks/bench_cluster.py [--dir bench-data] [--iters 3] [--quick | --scale F]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from distributed import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DATA_DIR,
    add_scale_options,
    apply_scale,
    cpu_model,
    ensure_dataset,
    pass_seconds,
    scaled,
)

import dlr  # noqa: E402
from dlr.checkpoint import CheckpointStore  # noqa: E402
from dlr.cluster import local_cluster  # noqa: E402
from dlr.dataset import open_dataset  # noqa: E402
from dlr.engine import Engine  # noqa: E402
from dlr.solvers import STATES  # noqa: E402
from dlr.sources import from_arrays, from_dataset  # noqa: E402
from dlr.training import EarlyStopping, RunState, start_run  # noqa: E402


def scaling(path: Path, iters: int) -> dict[int, float]:
    """Streamed pass time over ``path`` with 1 and 2 single-threaded worker processes."""
    out = {}
    for workers in (1, 2):
        with local_cluster(n_workers=workers, threads_per_worker=1) as cluster:
            with Client(cluster.address) as client:
                engine = Engine(from_dataset(open_dataset(str(path))), cache_size=0, get=client.get)
                out[workers] = pass_seconds(engine, iters)
    return out


def task_overhead(iters: int, m: int = 2_000_000) -> dict[str, dict[int, float]]:
    """Pass time over m × 8 float32 in-memory data (64 MB at full scale) split into 16 … 1024
    chunks."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((m, 8), dtype=np.float32)
    y = (rng.random(m) < 0.5).astype(np.uint8)
    counts = (16, 64, 256, 1024)
    import dask.array as da

    results: dict[str, dict[int, float]] = {"threads": {}, "2 workers": {}}
    for k in counts:
        Xd = da.from_array(X, chunks=(len(X) // k, 8))
        yd = da.from_array(y, chunks=len(y) // k)
        results["threads"][k] = pass_seconds(Engine(from_arrays(Xd, yd)), iters)
    with local_cluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster.address) as c:
        for k in counts:
            Xd = da.from_array(X, chunks=(len(X) // k, 8))
            yd = da.from_array(y, chunks=len(y) // k)
            results["2 workers"][k] = pass_seconds(Engine(from_arrays(Xd, yd), get=c.get), iters)
    return results


def checkpoint_cost(path: Path, iters: int) -> dict[str, float]:
    """Seconds to write one checkpoint of each solver's state, and one cached pass over path."""
    out = {"pass": pass_seconds(Engine(from_dataset(open_dataset(str(path)))), iters)}
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20_000, 64))
    y = (X[:, 0] + rng.standard_normal(20_000) > 0).astype(int)
    for solver in ("lbfgs", "newton"):
        state = dlr.LogisticRegression(solver=solver, max_iter=12, tol=0).fit(X, y).state_
        run = start_run(state, 13)
        with tempfile.TemporaryDirectory() as tmp:
            types = (RunState, EarlyStopping, *STATES)
            store = CheckpointStore(str(Path(tmp) / "ckpt"), keep=3, types=types)
            times = []
            for i in range(20):
                started = time.perf_counter()
                store.save(i, {}, run)
                times.append(time.perf_counter() - started)
        out[solver] = statistics.median(times)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=DATA_DIR)
    parser.add_argument("--iters", type=int, default=3)
    add_scale_options(parser)
    args = parser.parse_args(argv)
    scale = apply_scale(args)
    if args.quick:
        args.iters = 1
    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"machine  {cpu_model()}, {__import__('os').cpu_count()} cores; dlr {dlr.__version__}")
    if scale != 1:
        print(f"SCALE    {scale:g}: a reduced run to check the script; the figures mean nothing")
    m_big, m_small = scaled(16_000_000, scale, 4 * 4096), scaled(4_000_000, scale, 4096)
    big, small = ensure_dataset(args.dir, m_big, 64), ensure_dataset(args.dir, m_small, 64)
    big_gb, small_gb = m_big * 64 * 4 / 1e9, m_small * 64 * 4 / 1e9

    t = scaling(big, args.iters)
    efficiency = t[1] / (2 * t[2])
    print(
        f"\n1. streamed pass over {m_big} × 64 float32 ({big_gb:.2f} GB decoded), worker "
        "processes × 1 thread"
    )
    print(
        f"   1 worker   {t[1]:7.3f} s\n   2 workers  {t[2]:7.3f} s   speed-up {t[1] / t[2]:.2f}×, "
        f"scaling efficiency {efficiency:.0%}"
    )

    m_overhead = scaled(2_000_000, scale, 1024 * 16)
    overhead = task_overhead(args.iters, m_overhead)
    print(
        f"\n2. pass over {m_overhead * 32 / 1e6:.0f} MB in memory, by chunk count "
        "(seconds per pass)"
    )
    print("   chunks   " + "".join(f"{k:>10}" for k in overhead["threads"]))
    for name, row in overhead.items():
        ks = np.array(list(row))
        ts = np.array(list(row.values()))
        slope = np.polyfit(ks, ts, 1)[0]
        print(
            f"   {name:9s}"
            + "".join(f"{v:10.4f}" for v in ts)
            + f"   → {slope * 1e3:.3f} ms per extra chunk task"
        )

    cost = checkpoint_cost(small, args.iters)
    print("\n3. writing a checkpoint of the full solver state (local disk, fsynced), against an")
    print(f"   iteration of the {big_gb:.2f} GB dataset on 2 workers ({t[2]:.3f} s, target < 2%)")
    print(f"   and, for scale, a cached pass over the {small_gb:.2f} GB one ({cost['pass']:.4f} s)")
    for solver in ("lbfgs", "newton"):
        share = cost[solver] / t[2]
        print(
            f"   {solver:8s}    {cost[solver] * 1e3:.2f} ms per checkpoint = {share:.2%} of a "
            f"{big_gb:.2f} GB iteration ({'PASS' if share < 0.02 else 'FAIL'}), "
            f"{cost[solver] / cost['pass']:.1%} of a cached {small_gb:.2f} GB pass"
        )


if __name__ == "__main__":
    main()
