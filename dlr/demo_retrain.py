"""``dlr demo-retrain``: four simulated days of scheduled retraining, in well under a minute.

Day 1 ingests a batch and retrains: version 1 becomes champion. Day 2: a new batch, version 2 is
promoted. Day 3: a batch whose labels were shuffled: the gate rejects version 3 and the champion
stays; the bad span is excluded from later training sets; the champion is rolled back to
version 1 and promoted forward to version 2 again. Day 4: day 2's batch arrives again under
another name: ingest changes nothing, and retraining finds nothing new.
"""

import os
import shutil
import tempfile

import numpy as np

from dlr.lease import Lease
from dlr.registry import Registry
from dlr.retrain import RetrainConfig, retrain
from dlr.spans import ingest
from dlr.synthetic import make_chunk, make_dataset, true_weights

GATE = ("roc_auc>=0.70", "log_loss<=champion+0.5%", "roc_auc>=champion-0.002")


def write_batch(
    path: str, day: int, rows: int, n_features: int, *, seed: int = 11, shuffle: bool = False
) -> str:
    """A day's batch as an .npz (X, y) drawn from the same model as :func:`write_holdout`;
    ``shuffle`` permutes its labels (a broken upstream join)."""
    w, b = true_weights(n_features, seed)
    x, y = make_chunk(day * 10**7, day * 10**7 + rows, w, b, seed, np.float64)
    if shuffle:
        y = np.random.default_rng(day).permutation(y)
    np.savez(path, X=x, y=y)
    return path


def write_holdout(path: str, rows: int, n_features: int, *, seed: int = 11) -> str:
    """The pinned holdout: a dlr dataset from the batches' model (rows no batch holds)."""
    make_dataset(
        path, rows, n_features, chunk_samples=max(1, rows // 2), dtype="float64", seed=seed
    )
    return path


def run_retrain_demo(directory: str | None, *, rows: int, n_features: int, echo) -> None:
    keep = directory is not None
    directory = directory or tempfile.mkdtemp(prefix="dlr-demo-retrain-")
    os.makedirs(directory, exist_ok=True)
    reg_url = os.path.join(directory, "registry")
    data = os.path.join(directory, "incoming")
    os.makedirs(data, exist_ok=True)
    try:
        holdout = write_holdout(os.path.join(directory, "holdout.zarr"), rows // 4, n_features)
        config = RetrainConfig(holdout=holdout, gate=GATE, params={"solver": "newton"})
        echo(f"registry {reg_url}; gate: {', '.join(GATE)}")

        def day(n: int, batch: str) -> None:
            registry = Registry.create_or_open(reg_url)
            for r in ingest([batch], registry, label="y"):
                what = "committed as span" if r.created else "already committed as span"
                echo(f"day {n}: {os.path.basename(batch)} {what} {r.id[:12]} ({r.rows} rows)")
            outcome = retrain(reg_url, config, run_key=f"day-{n}", echo=lambda _: None)
            echo(
                f"day {n}: retrain → {outcome.decision} (exit {outcome.exit_code}), version "
                f"{outcome.version if outcome.version is not None else '–'}: {outcome.reason}"
            )
            echo(f"        champion is version {Registry(reg_url).alias('champion')}")

        day(1, write_batch(os.path.join(data, "day1.npz"), 1, rows, n_features))
        day(2, write_batch(os.path.join(data, "day2.npz"), 2, rows, n_features))
        day(3, write_batch(os.path.join(data, "day3.npz"), 3, rows, n_features, shuffle=True))
        registry = Registry(reg_url)
        with Lease.acquire(registry, owner="demo", run_key="demo-admin", ttl=30):
            bad = registry.spans()[-1].id
            registry.exclude_span(bad, "labels shuffled upstream", by="demo")
            echo(f"        span {bad[:12]} excluded from every later training set")
            registry.move_alias("champion", 1, expected=2, run=None, reason="rollback", by="demo")
            echo("        rollback: champion is version 1")
            registry.move_alias("champion", 2, expected=1, run=None, reason="forward", by="demo")
            echo("        forward again: champion is version 2")
        again = os.path.join(data, "day2-resent.npz")
        shutil.copyfile(os.path.join(data, "day2.npz"), again)
        day(4, again)
        versions = [(v.version, v.lineage["decision"]) for v in Registry(reg_url).versions()]
        echo("versions: " + ", ".join(f"v{n} {d}" for n, d in versions))
        echo(f"see {reg_url}/runs/<day>/report.html" if keep else "(pass --dir to keep it)")
    finally:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
