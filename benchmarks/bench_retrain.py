"""Benchmark ``dlr retrain`` after one new span of +10 % rows: the warm-started retrain against a
cold fit of the same spans, and what everything around training costs, side by side in one run.

Setup (not timed): a registry with an initial batch (``--rows`` × ``--features`` float32, a
dlr dataset ingested as one span, 10 % of it kept as its fresh holdout), a pinned holdout
(``--holdout-rows``, the same generating model) and a first retrain → version 1, champion
(it also warms the imports). Then one new span of ``--rows`` / 10 rows. Each repeat retrains
on a copy of that registry (``retrain()`` in this process, as ``dlr retrain`` runs it, on the
local threaded scheduler) and measures:

(a) **warm start**: the retrain's training passes (``n_passes`` of its record) and training
    time (its ``timings.train``) against a cold fit of the same spans with the same parameters
    and checkpointing (``LogisticRegression(...).fit(training_source(...), checkpoint=...)``,
    stage 2 of a run without ``init``). Both must reach the same optimum: the final objectives
    within 1e-6 relative. Target: warm passes ≤ 50 % of the cold fit's.
(b) **overhead**: the retrain's wall time minus its training time — lock, plan (the pinned
    holdout's sha256), evaluation of candidate and champion on both holdouts, drift, version,
    alias, report, run records — in units of one pass over (the new span's training rows +
    the pinned holdout + the new span's fresh holdout), that pass measured in the same run:
    a streamed loss-and-gradient pass of dlr's engine (``cache_size=0``: every chunk read,
    decoded and used) over each of the three, median of ``--pass-repeats``. The record's
    ``timings`` break the overhead down by stage. Target: ≤ 2 passes.

    python benchmarks/bench_retrain.py [--dir bench-data/retrain] [--rows 2000000]
        [--features 32] [--holdout-rows 200000] [--repeats 5] [--quick | --scale F]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DATA_DIR,
    Load,
    add_scale_options,
    apply_scale,
    chunk_samples_for,
    pass_seconds,
    print_platform,
    scaled,
    wait_until_quiet,
)

from dlr import scoring  # noqa: E402
from dlr.curves import BINS as CURVE_BINS  # noqa: E402
from dlr.dataset import create_arrays, open_dataset  # noqa: E402
from dlr.engine import Engine  # noqa: E402
from dlr.estimator import LogisticRegression  # noqa: E402
from dlr.estimator import load as load_model  # noqa: E402
from dlr.registry import Registry  # noqa: E402
from dlr.report import report_files  # noqa: E402
from dlr.retrain import RetrainConfig, retrain  # noqa: E402
from dlr.sources import from_dataset  # noqa: E402
from dlr.spans import ingest  # noqa: E402
from dlr.spanset import holdout_source, training_source  # noqa: E402
from dlr.synthetic import make_chunk, make_dataset, true_weights  # noqa: E402

SEED = 5
#: the gate of the runs: value thresholds the generating model passes, and a change threshold
GATE = ("roc_auc>=0.6", "log_loss<=champion+1%")
PASSES_TARGET = 0.5
OBJECTIVE_GAP = 1e-6
OVERHEAD_TARGET = 2.0
#: the record's stages other than training (dlr/retrain.py ``_timed``)
STAGES = ("plan", "evaluate", "drift", "publish")


def write_batch(path: Path, first_row: int, rows: int, n: int) -> str:
    """A batch of ``rows`` samples (rows ``first_row``… of the generating model, which no other
    batch or the holdout holds) as a dlr dataset, written chunk by chunk."""
    import zarr

    w, b = true_weights(n, SEED)
    chunk = chunk_samples_for(rows)
    group = zarr.open_group(str(path), mode="w")
    xa, ya = create_arrays(group, rows, n, chunk, samples_first=True, dtype="float32")
    for start in range(0, rows, chunk):
        stop = min(start + chunk, rows)
        x, y = make_chunk(first_row + start, first_row + stop, w, b, SEED, np.float32)
        xa[start:stop], ya[start:stop] = x, y
    return str(path)


def objective_gap(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=str(DATA_DIR / "retrain"), help="data and registries")
    p.add_argument("--rows", type=int, default=2_000_000, help="initial batch, before --scale")
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--holdout-rows", type=int, default=200_000, help="before --scale")
    p.add_argument("--solver", default="lbfgs")
    p.add_argument("--tol", type=float, default=1e-8)
    p.add_argument("--max-iter", type=int, default=500)
    p.add_argument("--repeats", type=int, default=5, help="retrains (each on a copy) and cold fits")
    p.add_argument("--pass-repeats", type=int, default=5, help="timed passes per source")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=120,
        help="before each measurement, wait up to this many seconds for other processes to idle",
    )
    add_scale_options(p)
    args = p.parse_args(argv)
    scale = apply_scale(args)
    args.rows = scaled(args.rows, scale, 20_000)
    args.holdout_rows = scaled(args.holdout_rows, scale, 2_000)
    if args.quick:
        args.repeats, args.pass_repeats, args.quiet_wait = 1, 2, 0
    return args


def setup(directory: Path, args) -> tuple[Path, str]:
    """The registry after version 1 (champion) and the new span, and the pinned holdout."""
    n, rows, new_rows = args.features, args.rows, args.rows // 10
    base = directory / f"registry-{rows}x{n}"
    holdout = str(directory / f"holdout-{args.holdout_rows}x{n}.zarr")
    shutil.rmtree(base, ignore_errors=True)
    if not Path(holdout).exists():
        chunk = chunk_samples_for(args.holdout_rows)
        make_dataset(holdout, args.holdout_rows, n, chunk_samples=chunk, seed=SEED)
    print(f"creating the registry {base} ...", flush=True)
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        first = write_batch(Path(scratch) / "day1.zarr", 10**9, rows, n)
        started = time.perf_counter()
        ingest([first], Registry.create_or_open(str(base)), label="y")
        print(f"  day 1: {rows} rows ingested in {time.perf_counter() - started:.1f}s")
        outcome = retrain(str(base), config(args, holdout), run_key="day-1", echo=lambda _: None)
        if outcome.decision != "promoted":
            raise SystemExit(f"the first retrain was not promoted: {outcome.reason}")
        print(f"  day 1: retrain → version {outcome.version}, champion")
        second = write_batch(Path(scratch) / "day2.zarr", 2 * 10**9, new_rows, n)
        ingest([second], Registry(str(base)), label="y")
        print(f"  day 2: {new_rows} rows ingested (+10 %)")
    return base, holdout


def config(args, holdout: str) -> RetrainConfig:
    params = {"solver": args.solver, "tol": args.tol, "max_iter": args.max_iter}
    return RetrainConfig(holdout=holdout, gate=GATE, params=params)


def describe(base: Path, holdout: str, args) -> None:
    reg = Registry(str(base))
    old, new = reg.spans()
    h = open_dataset(holdout)
    print(
        f"data      float32, {args.features} features, chunks of ≤ "
        f"{chunk_samples_for(args.rows)} samples, local disk (warm in the page cache)"
    )
    print(
        f"          initial span {old.train_rows} train + {old.holdout_rows} fresh-holdout rows; "
        f"new span {new.train_rows} + {new.holdout_rows}; pinned holdout {h.n_samples} rows"
    )
    print(
        f"fit       solver {args.solver}, tol {args.tol:g}, max_iter {args.max_iter}, default C "
        f"and cache; checkpoint every iteration (both fits, as dlr retrain does)"
    )
    print(f"gate      {', '.join(GATE)}")


def measure_pass(reg: Registry, holdout: str, args) -> tuple[dict, Load]:
    new = reg.spans()[-1]
    sources = {
        "new span, train rows": training_source(reg, [new]),
        "pinned holdout": from_dataset(open_dataset(holdout)),
        "new span, fresh holdout": holdout_source(reg, [new]),
    }
    with Load() as load:
        seconds = {
            name: pass_seconds(Engine(s, cache_size=0), args.pass_repeats)
            for name, s in sources.items()
        }
    return seconds, load


def measure_evaluation(reg: Registry, holdout: str, thetas: list, repeats: int) -> tuple:
    """Seconds (medians) to evaluate the models ``thetas`` on both holdouts: together, both
    holdouts in the same graphs (as a run does, ``scoring.evaluate_sources``) and one model at
    a time (as runs did before evaluate_many, less their separate pass for the curves)."""
    new = reg.spans()[-1]
    holdouts = [from_dataset(open_dataset(holdout)), holdout_source(reg, [new])]
    classes = np.array([0, 1])

    def together():
        jobs = [(source, thetas) for source in holdouts]
        scoring.evaluate_sources(jobs, classes, curve_bins=CURVE_BINS)

    def alone():
        for source in holdouts:
            for theta in thetas:
                scoring.evaluate(source, theta, classes)

    times = {"together": [], "alone": []}
    with Load() as load:
        for _ in range(repeats):
            for name, work in (("together", together), ("alone", alone)):
                started = time.perf_counter()
                work()
                times[name].append(time.perf_counter() - started)
    return {k: statistics.median(v) for k, v in times.items()}, load


def run_retrain(base: Path, holdout: str, args, r: int) -> dict:
    copy = base.with_name(f"{base.name}-run{r}")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(base, copy)
    os.sync()  # the copy written back before the timed run, not during it
    try:
        with Load() as load:
            started = time.perf_counter()
            outcome = retrain(
                str(copy), config(args, holdout), run_key="day-2", echo=lambda _: None
            )
            wall = time.perf_counter() - started
        record = outcome.record
        # the report (its figures inline SVG, dlr.svg) is written after the last timed
        # stage; written again here, it shows how much of "other" it is
        started = time.perf_counter()
        registry = Registry(str(copy))
        for name, data in report_files(record).items():
            registry.save_run_file("report-again", name, data)
        report = time.perf_counter() - started
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    return {
        "report": report,
        "wall": wall,
        "timings": record["timings"],
        "training": record["training"],
        "decision": outcome.decision,
        "auc_passes": {
            h: max(record["metrics"][who][h]["roc_auc_passes"] for who in ("candidate", "champion"))
            for h in ("pinned", "fresh")
        },
        "load": load,
    }


def run_cold(base: Path, args) -> dict:
    reg = Registry(str(base))
    model = LogisticRegression(solver=args.solver, tol=args.tol, max_iter=args.max_iter)
    with tempfile.TemporaryDirectory(dir=base.parent) as checkpoints:
        with Load() as load:
            started = time.perf_counter()
            model.fit(training_source(reg, reg.spans()), checkpoint=checkpoints)
            seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "passes": int(model.n_passes_),
        "iterations": int(np.ravel(model.n_iter_)[0]),
        "objective": float(model.loss_history_[-1]),
        "converged": bool(model.converged_),
        "theta": model.theta_,
        "load": load,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    directory = Path(args.dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    import dask
    import zarr

    print_platform({"numpy": np.__version__, "dask": dask.__version__, "zarr": zarr.__version__})
    print()
    print("== setup")
    base, holdout = setup(directory, args)
    describe(base, holdout, args)
    print()

    def quiet():
        waited = wait_until_quiet(args.quiet_wait)
        if waited > 3:
            print(f"(waited {waited:.0f}s for other processes to go quiet)")

    warm, cold = [], []
    for r in range(args.repeats):  # alternating, so drifts of the shared machine hit both
        quiet()
        cold.append(run_cold(base, args))
        quiet()
        warm.append(run_retrain(base, holdout, args, r))
    quiet()
    pass_times, pass_load = measure_pass(Registry(str(base)), holdout, args)
    unit = sum(pass_times.values())
    quiet()
    champion = load_model(Registry(str(base)).model_url(1))
    evaluation, evaluation_load = measure_evaluation(
        Registry(str(base)), holdout, [cold[0]["theta"], champion.theta_], args.pass_repeats
    )

    print("== (a) retrain after +10 % rows: warm start against a cold fit of the same spans")
    print("load: cores used by other processes / stolen, during the run")
    print(
        f"{'run':28s} {'passes':>6s} {'iters':>6s} {'seconds':>8s} {'objective':>20s} {'load':>9s}"
    )
    for r, (c, w) in enumerate(zip(cold, warm, strict=True)):
        print(
            f"{'cold fit #' + str(r + 1):28s} {c['passes']:6d} {c['iterations']:6d} "
            f"{c['seconds']:8.2f} {c['objective']:20.15f} {c['load']!s:>9s}"
            + ("" if c["converged"] else "  NOT CONVERGED")
        )
        t = w["training"]
        print(
            f"{'warm retrain #' + str(r + 1) + ' (train stage)':28s} {t['n_passes']:6d} "
            f"{t['n_iter']:6d} {w['timings']['train']:8.2f} {t['loss_history'][-1]:20.15f} "
            f"{w['load']!s:>9s}  {w['decision']}" + ("" if t["converged"] else "  NOT CONVERGED")
        )
    c_passes = statistics.median(c["passes"] for c in cold)
    w_passes = statistics.median(w["training"]["n_passes"] for w in warm)
    c_seconds = statistics.median(c["seconds"] for c in cold)
    w_seconds = statistics.median(w["timings"]["train"] for w in warm)
    gap = max(
        objective_gap(w["training"]["loss_history"][-1], c["objective"])
        for w, c in zip(warm, cold, strict=True)
    )
    print(
        f"warm / cold (medians): passes {w_passes:g} / {c_passes:g} = {w_passes / c_passes:.2f}, "
        f"time {w_seconds:.2f} / {c_seconds:.2f} s = {w_seconds / c_seconds:.2f}; largest "
        f"objective gap {gap:.1e}"
    )
    print()

    print("== (b) everything around training, in passes over (new data + holdouts)")
    print(
        "one streamed loss-and-gradient pass (cache_size=0), median of "
        f"{args.pass_repeats}, load {pass_load}:"
    )
    for name, seconds in pass_times.items():
        print(f"  {name:28s} {seconds:8.3f} s")
    print(f"  {'one pass over all three':28s} {unit:8.3f} s")
    print(f"{'retrain stage':34s}" + "".join(f" {'#' + str(r + 1):>16s}" for r in range(len(warm))))

    def row(name: str, values: list[float]) -> None:
        cells = "".join(f" {v:7.2f} s {v / unit:5.1f} p" for v in values)
        print(f"{name:34s}{cells}")

    row("wall time of retrain()", [w["wall"] for w in warm])
    row("  train", [w["timings"]["train"] for w in warm])
    overheads = [w["wall"] - w["timings"]["train"] for w in warm]
    row("  overhead = wall − train", overheads)
    for stage in STAGES:
        row(f"    {stage}", [w["timings"].get(stage, 0.0) for w in warm])
    row(
        "    other (lease, champion, report)",
        [
            o - sum(w["timings"].get(s, 0.0) for s in STAGES)
            for o, w in zip(overheads, warm, strict=True)
        ],
    )
    row("      of which the report (again)", [w["report"] for w in warm])
    print(
        "AUC passes per holdout (both models share them): "
        + ", ".join(f"#{r + 1} {w['auc_passes']}" for r, w in enumerate(warm))
    )
    print(
        f"evaluating 2 models on both holdouts (median of {args.pass_repeats}, load "
        f"{evaluation_load}): together {evaluation['together']:.3f} s "
        f"({evaluation['together'] / unit:.1f} p), one at a time {evaluation['alone']:.3f} s "
        f"({evaluation['alone'] / unit:.1f} p; without the curves' pass it also took)"
    )
    overhead = statistics.median(overheads) / unit
    print()

    print("== targets")
    rows = [
        (
            "warm passes / cold passes",
            f"{w_passes / c_passes:.2f}",
            f"≤ {PASSES_TARGET}",
            w_passes / c_passes <= PASSES_TARGET,
        ),
        ("warm vs cold objective gap", f"{gap:.1e}", f"≤ {OBJECTIVE_GAP:g}", gap <= OBJECTIVE_GAP),
        (
            "overhead, passes over new + holdouts",
            f"{overhead:.1f}",
            f"≤ {OVERHEAD_TARGET:g}",
            overhead <= OVERHEAD_TARGET,
        ),
    ]
    print(f"{'figure':40s} {'value':>10s}  {'target':10s} result")
    for name, value, target, ok in rows:
        print(f"{name:40s} {value:>10s}  {target:10s} {'PASS' if ok else 'FAIL'}")
    if args.scale < 1:
        print(f"(SCALE {args.scale:g}: the figures only show that the script runs)")
    elif args.scale > 1:
        print(f"(SCALE {args.scale:g}: every dataset {args.scale:g}× the default size)")


if __name__ == "__main__":
    main()
