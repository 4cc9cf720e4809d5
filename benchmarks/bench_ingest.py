"""Benchmark ``dlr ingest``: Parquet → span against reading the files with pyarrow and writing the
same arrays to zarr with the same codec, side by side in one run.

- **baseline**: for each file, ``ParquetFile.iter_batches`` (without pyarrow's pre-buffering,
  as dlr reads: faster here, and bounded memory) → a float64 (m_b, n) block (the
  fastest conversion found: ``RecordBatch.to_tensor(row_major=False)``, then a NumPy transposed
  copy) and the int64 labels → written chunk by chunk to a new zarr group
  (``dlr.dataset.codecs()``, the same chunk size), then fsynced: the least any ingest must do.
- **dlr ingest, later**: :func:`dlr.spans.ingest` of the same files into a registry whose schema
  and drift bins an earlier ingest fixed (a copy of one made from a small file of the same
  columns): the nightly case. The same reads and writes plus the schema checks, the finiteness
  checks, the content hash, the fresh-holdout split (two groups), the drift summaries, the
  rename and the commit.
- **dlr ingest, first**: the same into a fresh registry, which also fixes the schema and the
  drift bins from these rows: once in a registry's life. These files' Parquet statistics
  declare each feature's range (pyarrow writes them by default), so its histograms are counted
  as the rows stream by; without them it would read its staged rows back once to count them.

Runs alternate, each repeat in another order (all six in six repeats), so drifts of the shared
machine hit all and each contender runs right after each other one as often (a run is slowed by
the one before it in the process: its freed memory, its page cache writeback); the median and
the fastest of ``--repeats`` are reported, with both ratios and the target (≤ 1.3), judged on
the worse of the two. By default every run is in this one process, which has made each
contender's arrays before (steady state, as a service ingesting all day would be). With
``--processes`` every timed run is the first of a new Python process (its imports not timed),
as each ``dlr ingest`` command and each script of the baseline is: each side then also pays for
the first touch of the memory it works in.

    python benchmarks/bench_ingest.py [--dir bench-data/ingest] [--files 4] [--rows 500000]
        [--features 32] [--repeats 6] [--processes]
"""

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from dlr.atomic import fsync_tree
from dlr.dataset import SAMPLES_FIRST, codecs
from dlr.registry import Registry
from dlr.spans import CHUNK_BYTES, ingest
from dlr.tables import PARQUET_STREAMING

TARGET = 1.3


def make_file(path: Path, rows: int, features: int, seed: int) -> str:
    if not path.exists():
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(rows, features))
        y = (X[:, 0] + rng.logistic(size=rows) > 0).astype(np.int64)
        columns = {f"f{j}": X[:, j] for j in range(features)} | {"label": y}
        pq.write_table(pa.table(columns), path, row_group_size=131072)
    return str(path)


def make_files(directory: Path, files: int, rows: int, features: int) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    return [
        make_file(directory / f"day{i}-{rows}x{features}.parquet", rows, features, i)
        for i in range(files)
    ]


def seed_registry(directory: Path, features: int) -> Path:
    """A registry whose schema and drift bins are fixed, by an ingest of 20,000 other rows of
    the same columns."""
    out = directory / f"seed-registry-{features}"
    shutil.rmtree(out, ignore_errors=True)
    seed = make_file(directory / f"seed-20000x{features}.parquet", 20_000, features, 10**6)
    ingest([seed], Registry.create_or_open(str(out)), label="label")
    return out


def baseline(paths: list[str], out: Path, chunk: int) -> None:
    """pyarrow read + zarr write of the same arrays, with dlr's codec and chunk size."""
    for k, path in enumerate(paths):
        f = pq.ParquetFile(path, **PARQUET_STREAMING)  # the fastest reading found, as dlr's
        names = f.schema_arrow.names
        features = [n for n in names if n != "label"]
        m, n = f.metadata.num_rows, len(features)
        group = zarr.open_group(str(out / f"g{k}"), mode="w")
        xa = group.create_array(
            "X",
            shape=(m, n),
            chunks=(chunk, n),
            dtype="float64",
            dimension_names=SAMPLES_FIRST,
            **codecs(),
        )
        ya = group.create_array("y", shape=(m,), chunks=(chunk,), dtype="int64", **codecs())
        start = 0
        for batch in f.iter_batches(batch_size=chunk):
            # the fastest load found: pyarrow copies the columns side by side (column-major),
            # NumPy transposes that tile by tile; np.column_stack of the columns or
            # to_tensor(row_major=True) take five times as long
            X = np.ascontiguousarray(batch.select(features).to_tensor(row_major=False))
            stop = start + batch.num_rows
            xa[start:stop] = X
            ya[start:stop] = batch.column("label").to_numpy()
            start = stop
    fsync_tree(str(out))


def run_first(paths: list[str], out: Path) -> None:
    ingest(paths, Registry.create_or_open(str(out)), label="label")


def run_later(paths: list[str], out: Path, seeded: Path) -> float:
    """Seconds of an ingest into a copy of ``seeded`` (the copy not timed)."""
    shutil.copytree(seeded, out)
    fsync_tree(str(out))
    os.sync()
    started = time.perf_counter()
    ingest(paths, Registry(str(out)), label="label")
    return time.perf_counter() - started


NAMES = ("baseline", "dlr ingest, later", "dlr ingest, first")
#: The order of the contenders in each repeat, in turn: every order, so that in six repeats
#: each contender runs right after each other one as often (a run's speed depends on what ran
#: before it in the process: its freed memory, its writeback).
ORDERS = list(itertools.permutations(NAMES))


def timed_run(name: str, paths: list[str], out: Path, chunk: int, seeded: Path) -> float:
    """Seconds of one run of contender ``name`` writing into ``out`` (removed before and after)."""
    shutil.rmtree(out, ignore_errors=True)
    os.sync()  # no writeback of an earlier run left to meet this one's fsync
    started = time.perf_counter()
    if name == "baseline":
        baseline(paths, out, chunk)
        seconds = time.perf_counter() - started
    elif name == "dlr ingest, first":
        run_first(paths, out)
        seconds = time.perf_counter() - started
    else:
        seconds = run_later(paths, out, seeded)
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def in_new_process(name: str, paths: list[str], out: Path, chunk: int, seeded: Path) -> float:
    """:func:`timed_run` as the first run of a new Python process (imports not timed)."""
    code = (
        "import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
        "import bench_ingest as b; a = json.loads(sys.argv[2]); "
        "print(b.timed_run(a['name'], a['paths'], Path(a['out']), a['chunk'], Path(a['seeded'])))"
    )
    job = {"name": name, "paths": paths, "out": str(out), "chunk": chunk, "seeded": str(seeded)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).resolve().parent), json.dumps(job)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="bench-data/ingest")
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument(
        "--processes", action="store_true", help="each timed run in a new Python process"
    )
    args = parser.parse_args()
    directory = Path(args.dir)
    paths = make_files(directory, args.files, args.rows, args.features)
    chunk = max(1, CHUNK_BYTES // (args.features * 8))
    size = sum(os.path.getsize(p) for p in paths)
    print(
        f"{args.files} Parquet files, {args.rows} rows × {args.features} float64 features + "
        f"int64 label each ({size / 1e6:.0f} MB on disk); chunks of {chunk} rows"
    )
    seeded = seed_registry(directory, args.features)
    print(
        "each timed run the first of a new Python process"
        if args.processes
        else "every run in this process (steady state)"
    )
    run = in_new_process if args.processes else timed_run
    times: dict[str, list[float]] = {name: [] for name in NAMES}
    for r in range(args.repeats):
        for name in ORDERS[r % len(ORDERS)]:
            out = directory / f"out-{name.replace(' ', '-').replace(',', '')}"
            times[name].append(run(name, paths, out, chunk, seeded))
        print(f"run {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    rows = args.files * args.rows
    medians = {k: statistics.median(v) for k, v in times.items()}
    fastest = {k: min(v) for k, v in times.items()}
    print("                    median  (fastest)")
    for name, t in medians.items():
        print(
            f"{name:<18} {t:6.2f} s ({fastest[name]:5.2f} s)  {rows / t / 1e6:6.2f} M rows/s  "
            f"{size / t / 1e6:7.1f} MB/s"
        )
    # The writes' fsync makes single runs of either side slow now and then (the page cache's
    # writeback of earlier runs): both the medians' ratio and the fastest runs' are given, and
    # the target is judged on the worse of the two.
    for name in NAMES[1:]:
        ratios = (medians[name] / medians["baseline"], fastest[name] / fastest["baseline"])
        verdict = "PASS" if max(ratios) <= TARGET else "FAIL"
        print(
            f"{name} / baseline = {ratios[0]:.2f} (medians), {ratios[1]:.2f} (fastest runs) "
            f"(target ≤ {TARGET}): {verdict}"
        )
    shutil.rmtree(seeded, ignore_errors=True)


if __name__ == "__main__":
    main()
