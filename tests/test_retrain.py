"""``dlr retrain``: gate on both holdouts, idempotent run keys, crash safety, the lock, warm start.

Real registries on disk, real ``dlr retrain`` processes killed with SIGKILL at named points
(DLR_TEST_PAUSE_AT, :mod:`dlr.pause`), reruns with the same run key.
"""

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fsspec.implementations.local
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import dlr
from dlr import retrain as retrain_module
from dlr import scoring, sources
from dlr.cli import main
from dlr.curves import BINS as CURVE_BINS
from dlr.dataset import open_dataset
from dlr.decode import read_block
from dlr.demo_retrain import run_retrain_demo, write_batch, write_holdout
from dlr.drift import drift
from dlr.errors import DataError, DlrError
from dlr.estimator import LogisticRegression
from dlr.gate import GateError
from dlr.registry import Registry
from dlr.report import jsonable
from dlr.retrain import (
    LOCKED,
    NOTHING_NEW,
    PROMOTED,
    REJECTED,
    RetrainConfig,
    parse_period,
    retrain,
    run_key_for,
)
from dlr.spans import ingest
from dlr.spanset import training_source
from dlr.summary import Edges, of_rows
from tests.registry_support import small_tmpfs

DLR = str(Path(sys.executable).with_name("dlr"))
#: the gate of these runs (decisions on these small holdouts are deterministic but close)
GATE = ("roc_auc>=0.70", "log_loss<=champion+1%")
FEATURES = 5
#: gradient descent with a fixed number of iterations: long enough to be killed in the middle
GD = {"solver": "gd", "learning_rate": 1.0, "max_iter": 12, "tol": 0.0, "C": 1.0}
GD_FLAGS = ["--solver", "gd", "--learning-rate", "1.0", "--max-iter", "12", "--tol", "0"]


class Days:
    """A registry in ``root`` fed with simulated daily batches."""

    def __init__(self, root: Path, rows: int = 3000):
        self.root, self.rows = root, rows
        self.url = str(root / "registry")
        self.holdout = write_holdout(str(root / "holdout.zarr"), 1000, FEATURES)

    def ingest(self, day: int, *, rows: int | None = None, shuffle: bool = False):
        path = write_batch(
            str(self.root / f"day{day}.npz"), day, rows or self.rows, FEATURES, shuffle=shuffle
        )
        return ingest([path], Registry.create_or_open(self.url), label="y")

    def config(self, **kwargs) -> RetrainConfig:
        return RetrainConfig(
            **{"holdout": self.holdout, "gate": GATE, "params": dict(GD), "lease_ttl": 3, **kwargs}
        )

    def retrain(self, run_key: str, **kwargs):
        return retrain(self.url, self.config(**kwargs), run_key=run_key, echo=lambda _: None)

    @property
    def registry(self) -> Registry:
        return Registry(self.url)

    def command(self, run_key: str) -> list[str]:
        return [DLR, "-q", "retrain", "--registry", self.url, "--holdout", self.holdout]\
            + [f"--gate={g}" for g in GATE] + GD_FLAGS\
            + ["--run-key", run_key, "--lease-ttl", "3"]  # fmt: skip


@pytest.fixture
def days(tmp_path):
    return Days(tmp_path)


def coefficients(registry: Registry, version: int) -> bytes:
    """The stored bytes of a version's weights."""
    model = dlr.load(registry.model_url(version))
    return model.coef_.tobytes() + model.intercept_.tobytes()


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_process_left_behind():
    """A paused process sleeps for an hour: kill whatever a failing test left running."""
    yield
    while STARTED:
        p = STARTED.pop()
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


def start_paused(command: list[str], stage: str) -> subprocess.Popen:
    env = {**os.environ, "DLR_TEST_PAUSE_AT": stage}
    p = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    STARTED.append(p)
    return p


def wait_for_pause(process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Read the process's stderr until it says it paused (or fail if it exits first)."""
    deadline, seen = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], 0.5)
        if ready:
            chunk = os.read(process.stderr.fileno(), 65536)
            seen += chunk
            if re.search(rb"dlr: paused at [^\n]*\n", seen):  # the whole line
                return
            if not chunk:
                break
    process.kill()
    pytest.fail(f"the process did not pause (exit {process.wait()}): {seen.decode()[-2000:]}")


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stderr.close()
    process.stdout.close()


def rerun_until_unlocked(days: Days, run_key: str, timeout: float = 30.0, **config):
    """Rerun in this process; a killed holder's lease is taken over once it expires."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = days.retrain(run_key, **config)
        if outcome.exit_code != LOCKED or time.monotonic() > deadline:
            return outcome
        time.sleep(0.5)


def assert_consistent(registry: Registry, run_key: str) -> None:
    """One version per run key, the champion loads, the run finished."""
    keys = [v.lineage["run_key"] for v in registry.versions()]
    assert len(keys) == len(set(keys)), keys
    assert [v.version for v in registry.versions()] == list(range(1, len(keys) + 1))
    dlr.load(f"{registry.url}@champion")
    assert registry.run_record(run_key)["status"] == "finished"


def test_a_window_of_spans_given_on_the_command_line_is_the_training_set(days):
    """--window-last N trains on the last N committed spans, --window-within on those
    committed within the period: the version's lineage names exactly those."""
    for day in (1, 2, 3):
        days.ingest(day)
    spans = [s.id for s in days.registry.spans()]
    first = CliRunner().invoke(main, [*days.command("day-3")[1:], "--window-last", "2"])
    assert first.exit_code == PROMOTED, first.output
    assert days.registry.version(1).lineage["spans"] == spans[1:]
    days.ingest(4)
    second = CliRunner().invoke(main, [*days.command("day-4")[1:], "--window-within", "30d"])
    assert second.exit_code in (PROMOTED, REJECTED), second.output
    assert days.registry.version(2).lineage["spans"] == [s.id for s in days.registry.spans()]


def test_without_a_run_key_the_scheduled_time_truncated_to_the_period_is_the_key(days):
    """A retry of the same scheduled run (any time within its period) is the same run: it
    reports the earlier outcome and registers nothing."""
    days.ingest(1)
    args = days.command("unused")[1:]
    at = args.index("--run-key")
    args = args[:at] + args[at + 2 :]
    first = CliRunner().invoke(main, [*args, "--scheduled-time", "2026-12-01T02:17:05Z"])
    assert first.exit_code == PROMOTED, first.output
    assert days.registry.version(1).lineage["run_key"] == "20261201T000000Z"
    retry = CliRunner().invoke(main, [*args, "--scheduled-time", "2026-12-01T23:59:00Z"])
    assert retry.exit_code == PROMOTED and len(days.registry.versions()) == 1
    days.ingest(2)
    hourly = ["--scheduled-time", "2026-12-01T02:17:05Z", "--period", "1h"]
    CliRunner().invoke(main, [*args, *hourly])
    assert days.registry.version(2).lineage["run_key"] == "20261201T020000Z"


def test_the_exit_statuses_are_the_documented_ones():
    """0 promoted, 3 rejected by the gate, 4 nothing new, 5 another run holds the lock (1 is
    any error): schedulers and scripts branch on these numbers."""
    assert (PROMOTED, REJECTED, NOTHING_NEW, LOCKED) == (0, 3, 4, 5)


def test_every_dlr_train_option_is_dlr_retrains_unless_the_registry_decides_it():
    """The same click options (names, flags, types, defaults); the rest are the registry's:
    the data and its columns, the starting point, the checkpoints, the model's path; early
    stopping needs a validation set a registry does not name."""
    train, retrain_command = main.get_command(None, "train"), main.get_command(None, "retrain")
    theirs = {p.name: p for p in train.params}
    ours = {p.name: p for p in retrain_command.params}
    registrys = {"data", "x_name", "y_name", "sample_weight", "model_path", "overwrite",
                 "init_model", "checkpoint", "resume", "validation", "early_stopping",
                 "n_iter_no_change", "plot"}  # fmt: skip
    assert set(theirs) - set(ours) == registrys
    for name in set(theirs) & set(ours):
        a, b = theirs[name], ours[name]
        assert (a.opts, a.default, type(a.type), a.multiple) == (b.opts, b.default, type(b.type),
                                                                 b.multiple), name  # fmt: skip


def test_the_train_options_given_to_dlr_retrain_are_the_fits(days):
    """--C, --standardize, --class-weight, --solver ... reach the fit: the first version is,
    bit for bit, dlr.LogisticRegression with those parameters fitted on the same spans."""
    days.ingest(1)
    options = ["--solver", "lbfgs", "--C", "0.25", "--standardize", "--class-weight", "balanced",
               "--max-iter", "30", "--tol", "1e-10"]  # fmt: skip
    gate = [f"--gate={g}" for g in GATE]
    args = ["-q", "retrain", "--registry", days.url, "--holdout", days.holdout, *gate]
    result = CliRunner().invoke(main, [*args, *options, "--run-key", "day-1"])
    assert result.exit_code == PROMOTED, result.output
    reg = days.registry
    params = reg.version(1).lineage["params"]
    assert (params["solver"], params["C"], params["standardize"]) == ("lbfgs", 0.25, True)
    assert params["class_weight"] == "balanced"
    expected = dlr.LogisticRegression(
        solver="lbfgs", C=0.25, standardize=True, class_weight="balanced", max_iter=30, tol=1e-10
    ).fit(training_source(reg, reg.spans()))
    got = dlr.load(reg.model_url(1))
    np.testing.assert_array_equal(got.coef_, expected.coef_)
    np.testing.assert_array_equal(got.intercept_, expected.intercept_)


# --- the gate in a run -------------------------------------------------------------------------


def test_first_run_promotes_and_a_rerun_of_its_key_only_reports(days):
    days.ingest(1)
    first = days.retrain("day-1")
    assert (first.exit_code, first.decision, first.version) == (PROMOTED, "promoted", 1)
    reg = days.registry
    assert reg.alias("champion") == 1
    lineage = reg.version(1).lineage
    assert lineage["parent"] is None and lineage["run_key"] == "day-1"
    assert lineage["spans"] == [s.id for s in reg.spans()]
    assert lineage["holdout"]["sha256"] == reg.holdout["sha256"]
    assert set(lineage["metrics"]["pinned"]) >= {"log_loss", "roc_auc"}
    assert lineage["params"]["solver"] == "gd" and lineage["dlr_version"] == dlr.__version__
    assert lineage["drift"] is None  # nothing to compare the first batch with
    again = days.retrain("day-1")
    assert again.repeated and (again.exit_code, again.version) == (PROMOTED, 1)
    assert len(reg.versions()) == 1
    run = Path(reg.run_url("day-1"))
    report = json.loads((run / "report.json").read_text())
    assert report["decision"] == "promoted"
    assert (run / "report.json").read_bytes() == (run / "run.json").read_bytes()  # the record
    stages = {"plan", "train", "evaluate", "drift"}  # each stage's seconds, in the version too
    assert set(report["timings"]) == stages | {"publish"} and set(lineage["timings"]) >= stages
    assert all(seconds >= 0 for seconds in report["timings"].values())
    assert report["timings"]["train"] > 0
    assert "<svg" in (run / "report.html").read_text()


def test_no_new_span_trains_nothing(days):
    days.ingest(1)
    days.retrain("day-1")
    outcome = days.retrain("day-2")
    assert (outcome.exit_code, outcome.decision) == (NOTHING_NEW, "nothing-new")
    assert len(days.registry.versions()) == 1
    assert not os.path.exists(days.registry.checkpoint_url("day-2"))


def test_a_batch_with_shuffled_labels_is_rejected_and_the_champion_stays(days):
    days.ingest(1)
    days.retrain("day-1")
    days.ingest(2, shuffle=True)
    outcome = days.retrain("day-2")
    assert (outcome.exit_code, outcome.decision, outcome.version) == (REJECTED, "rejected", 2)
    reg = days.registry
    assert reg.alias("champion") == 1
    assert reg.version(2).lineage["decision"] == "rejected"
    assert "failed on the fresh holdout" in outcome.reason
    assert outcome.record["drift"]["label_shift"] >= 0
    again = days.retrain("day-2")  # a retry of the finished run: its outcome, again
    assert again.repeated and (again.exit_code, again.version) == (REJECTED, 2)
    assert len(reg.versions()) == 2 and reg.alias("champion") == 1


def test_manual_promotion_only_sets_the_challenger(days):
    days.ingest(1)
    days.retrain("day-1")
    days.ingest(2)
    outcome = days.retrain("day-2", promote="manual")
    assert (outcome.exit_code, outcome.decision) == (PROMOTED, "challenger")
    assert days.registry.aliases() == {"champion": 1, "challenger": 2}


def test_candidate_and_champion_share_each_read_of_the_holdouts(days, monkeypatch):
    """Each holdout chunk is read once for both models (metrics, ROC curves and an exact AUC:
    holdouts of up to a million samples need no refinement pass), not once per model."""
    days.ingest(1)
    days.retrain("day-1")
    days.ingest(2)
    fresh = days.registry.spans()[-1].holdout_url
    reads = []

    def counting_read(arr, samples_first, start, stop, origin, chunk, *rest):
        reads.append((os.path.realpath(str(arr.store_path).removeprefix("file://")), chunk))
        return read_block(arr, samples_first, start, stop, origin, chunk, *rest)

    monkeypatch.setattr(sources, "read_block", counting_read)
    outcome = days.retrain("day-2")
    metrics, curves = outcome.record["metrics"], outcome.record["curves"]
    for holdout, url in (("pinned", days.holdout), ("fresh", fresh)):
        assert set(curves[holdout]) == {"candidate", "champion"}
        passes = max(metrics[who][holdout]["roc_auc_passes"] for who in ("candidate", "champion"))
        assert passes == 1
        x = os.path.join(os.path.realpath(url), "X")
        per_chunk = Counter(chunk for path, chunk in reads if path == x)
        assert per_chunk and set(per_chunk.values()) == {passes}, (holdout, per_chunk)


def champion_on(holdout: str, registry: Registry, version: int) -> tuple[dict, list]:
    """Version ``version`` evaluated afresh on ``holdout``, as a run records it."""
    model = dlr.load(registry.model_url(version))
    source = sources.from_dataset(open_dataset(holdout))
    (metrics,) = scoring.evaluate_many(
        source, [model.theta_], np.asarray(model.classes_), curve_bins=CURVE_BINS
    )
    return jsonable(metrics.pop("score_counts")), jsonable(metrics)


def test_the_champions_pinned_metrics_come_from_the_run_that_made_it_bit_for_bit(days):
    """The champion was evaluated on the pinned holdout by the run that made it: a later run
    takes those metrics (and says so) instead of a second read, and they are exactly what
    evaluating the champion again gives."""
    days.ingest(1)
    days.retrain("day-1")
    days.ingest(2)
    record = days.retrain("day-2").record
    assert record["reused"] == {"champion": {"pinned": {"version": 1, "run_key": "day-1"}}}
    counts, metrics = champion_on(days.holdout, days.registry, 1)
    assert record["metrics"]["champion"]["pinned"] == metrics
    assert record["curves"]["pinned"]["champion"] == counts
    assert list(record["curves"]["pinned"]) == ["candidate", "champion"]


def test_the_champion_is_evaluated_again_on_another_holdout_or_by_another_method(
    days, tmp_path, monkeypatch
):
    days.ingest(1)
    days.retrain("day-1")
    days.ingest(2)
    other = write_holdout(str(tmp_path / "other.zarr"), 1000, FEATURES, seed=12)
    record = days.retrain("day-2", holdout=other, repin_holdout=True).record
    assert record["reused"] is None
    assert record["metrics"]["champion"]["pinned"] == champion_on(other, days.registry, 1)[1]
    days.ingest(3)
    monkeypatch.setattr(scoring, "METHOD", scoring.METHOD + 1)  # as after a change of method
    record = days.retrain("day-3", holdout=other).record
    assert record["reused"] is None
    champion = record["champion"]
    assert record["metrics"]["champion"]["pinned"] == champion_on(other, days.registry, champion)[1]


def test_the_champion_is_evaluated_again_when_its_run_saw_other_classes(days):
    """The run that made the champion recorded its metrics for classes it knew; with other
    classes (here as if its labels had been 1 and 2) they are not this run's: evaluated again."""
    days.ingest(1)
    days.retrain("day-1")
    reg = days.registry
    earlier = reg.run_record("day-1")
    earlier["metrics"]["candidate"]["pinned"]["classes"] = [1, 2]
    reg.save_run_file("day-1", "run.json", json.dumps(earlier).encode())
    days.ingest(2)
    record = days.retrain("day-2").record
    assert record["reused"] is None
    assert record["metrics"]["champion"]["pinned"] == champion_on(days.holdout, reg, 1)[1]


def holdout_reads(days, monkeypatch) -> list:
    """The pinned holdout's files read from now on (hashing it reads every one)."""
    hashed = []
    real_cat = fsspec.implementations.local.LocalFileSystem.cat_file

    def counting_cat(fs, path, *args, **kwargs):
        if os.path.realpath(path).startswith(os.path.realpath(days.holdout)):
            hashed.append(path)
        return real_cat(fs, path, *args, **kwargs)

    monkeypatch.setattr(fsspec.implementations.local.LocalFileSystem, "cat_file", counting_cat)
    return hashed


def test_the_pinned_holdout_is_hashed_again_only_when_its_files_change(days, monkeypatch):
    days.ingest(1)
    days.retrain("day-1")
    hashed = holdout_reads(days, monkeypatch)
    days.ingest(2)
    assert days.retrain("day-2").exit_code == PROMOTED
    assert hashed == []  # the same files as when it was pinned: not read again
    # rewritten in place with other labels (same sizes): hashed again, and refused
    y = zarr.open_group(days.holdout)["y"]
    y[:] = 1 - y[:]
    days.ingest(3)
    with pytest.raises(DlrError, match="differs from the one pinned"):
        days.retrain("day-3")
    assert hashed


def test_a_pin_without_its_files_digest_is_hashed_once_then_recorded(days, monkeypatch):
    """A registry pinned before the digest of the holdout's files was kept: the next run hashes
    the holdout, finds it the same and records the digest (no history event: the pinned holdout
    did not change); the run after that reads none of its files."""
    days.ingest(1)
    days.retrain("day-1")
    meta_path = Path(days.url) / "registry.json"
    meta = json.loads(meta_path.read_text())
    del meta["holdout"]["files"]
    meta_path.write_text(json.dumps(meta))
    history = days.registry.history()
    hashed = holdout_reads(days, monkeypatch)
    days.ingest(2)
    assert days.retrain("day-2").exit_code == PROMOTED
    assert hashed and "files" in days.registry.holdout
    assert [e["event"] for e in days.registry.history()[len(history) :]] == ["ingest", "alias"]
    hashed.clear()
    days.ingest(3)
    days.retrain("day-3")
    assert hashed == []


def test_a_different_holdout_is_refused_unless_repinned(days, tmp_path):
    days.ingest(1)
    days.retrain("day-1")
    days.ingest(2)
    other = write_holdout(str(tmp_path / "other.zarr"), 1000, FEATURES, seed=12)
    with pytest.raises(DlrError, match="differs from the one pinned"):
        days.retrain("day-2", holdout=other)
    # the same content at another path is the same holdout
    moved = shutil.copytree(days.holdout, tmp_path / "moved.zarr")
    assert days.retrain("day-2", holdout=str(moved)).exit_code == PROMOTED
    days.ingest(3)
    assert days.retrain("day-3", holdout=other, repin_holdout=True).version == 3
    assert days.registry.holdout["url"] == other


def test_an_empty_gate_is_refused_before_anything_runs(days):
    days.ingest(1)
    with pytest.raises(GateError, match="no gate configured"):
        days.retrain("day-1", gate=())
    assert days.registry.run_record("day-1") is None


# --- the command line ----------------------------------------------------------------------------


def test_the_cli_reads_a_toml_config_and_flags_win(days, tmp_path):
    days.ingest(1)
    config = tmp_path / "retrain.toml"
    config.write_text(
        f'registry = "{days.url}"\nholdout = "{days.holdout}"\n'
        'gate = ["roc_auc>=0.70"]\nsolver = "gd"\nmax-iter = 3\nlearning_rate = 1.0\n'
    )
    result = CliRunner().invoke(
        main, ["retrain", "--config", str(config), "--max-iter", "5", "--run-key", "k"]
    )
    assert result.exit_code == PROMOTED, result.output
    assert "run k: version 1 promoted" in result.output
    lineage = days.registry.version(1).lineage
    assert (lineage["params"]["solver"], lineage["params"]["max_iter"]) == ("gd", 5)
    rerun = CliRunner().invoke(main, ["retrain", "--config", str(config), "--run-key", "k"])
    assert rerun.exit_code == PROMOTED and "already finished" in rerun.output
    nothing = CliRunner().invoke(main, ["retrain", "--config", str(config), "--run-key", "k2"])
    assert nothing.exit_code == NOTHING_NEW, nothing.output


@pytest.mark.parametrize(
    "content, message",
    [
        ('gate = ["roc_auc>=0.7"]\nmax_iterations = 3\n', "unknown setting 'max_iterations'"),
        ("gate = [", "is not valid TOML"),
        ('gate = ["auc>=0.7"]\n', "unknown metric 'auc'"),
        ('gate = ["roc_auc>=0.7"]\ndrift-bins = 20\n', "(`dlr ingest --drift-bins N`)"),
    ],
)
def test_config_and_gate_mistakes_are_one_line_errors(days, tmp_path, content, message):
    config = tmp_path / "bad.toml"
    config.write_text(content)
    days.ingest(1)
    args = ["retrain", "--config", str(config), "--registry", days.url, "--holdout", days.holdout]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_the_default_run_key_is_the_scheduled_time_truncated_to_the_period():
    t = datetime(2026, 12, 1, 2, 17, 5, tzinfo=UTC)
    assert run_key_for(t, parse_period("1d")) == "20261201T000000Z"
    assert run_key_for(t, parse_period("1h")) == "20261201T020000Z"
    assert run_key_for(t, parse_period("15m")) == "20261201T021500Z"
    assert parse_period("1w") == timedelta(days=7)
    with pytest.raises(DlrError, match="cannot read period '1 day'"):
        parse_period("1 day")


# --- crashes and the lock ------------------------------------------------------------------------


def test_four_runs_at_once_one_trains_killed_mid_training_resumes_bit_identically(days, tmp_path):
    days.ingest(1)
    days.retrain("day-1")
    days.ingest(2)
    reference = Days(tmp_path / "reference")
    shutil.copytree(days.url, reference.url)
    reference.holdout = days.holdout
    processes = [start_paused(days.command("day-2"), "checkpoint@4") for _ in range(4)]
    deadline = time.monotonic() + 180
    while sum(p.poll() is not None for p in processes) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    finished = [p for p in processes if p.poll() is not None]
    (holder,) = [p for p in processes if p.poll() is None]
    assert [p.returncode for p in finished] == [LOCKED] * 3
    for p in finished:
        assert b"locked: another run holds the registry lease" in p.stdout.read()
        p.stdout.close()
        p.stderr.close()
    wait_for_pause(holder)  # the one that holds the lease is training: 4 checkpoints written
    assert (
        dlr.load(f"{days.url}@champion").coef_.tobytes()
        == dlr.load(days.registry.model_url(1)).coef_.tobytes()
    )
    kill(holder)
    assert days.registry.alias("champion") == 1
    resumed = rerun_until_unlocked(days, "day-2")  # after the dead holder's lease expires
    assert (resumed.exit_code, resumed.version) == (PROMOTED, 2)
    uninterrupted = reference.retrain("day-2")
    assert uninterrupted.version == 2
    assert coefficients(days.registry, 2) == coefficients(reference.registry, 2)
    assert (
        resumed.record["training"]["loss_history"]
        == uninterrupted.record["training"]["loss_history"]
    )
    assert_consistent(days.registry, "day-2")


def moves_to(url: str, version: int) -> list[dict]:
    """The alias moves to ``version`` that ``dlr registry history --json`` reports."""
    result = CliRunner().invoke(main, ["registry", "history", url, "--json"])
    assert result.exit_code == 0, result.output
    return [e for e in json.loads(result.stdout) if e["event"] == "alias" and e["to"] == version]


@pytest.mark.parametrize(
    "stage, champion_while_dead",
    [
        ("version-written", 1),  # registered, the alias not touched
        ("alias-write", 1),  # just before the pointer write
        ("alias-history", 2),  # the pointer written, not its file in history/
        ("alias-moved", 2),
    ],
)
def test_killed_around_the_publication_a_rerun_finishes_without_a_second_version(
    days, stage, champion_while_dead
):
    days.ingest(1)
    days.retrain("day-1")
    days.ingest(2)
    process = start_paused(days.command("day-2"), stage)
    wait_for_pause(process)
    kill(process)
    reg = days.registry
    assert [v.version for v in reg.versions()] == [1, 2]  # written before the pause
    assert reg.alias("champion") == champion_while_dead
    assert dlr.load(f"{days.url}@champion").n_features_in_ == FEATURES
    # the history claims the move exactly when it happened
    assert len(moves_to(days.url, 2)) == (1 if champion_while_dead == 2 else 0)
    before = coefficients(reg, 2)
    outcome = rerun_until_unlocked(days, "day-2")
    assert (outcome.exit_code, outcome.decision, outcome.version) == (PROMOTED, "promoted", 2)
    assert reg.alias("champion") == 2
    assert coefficients(reg, 2) == before
    assert_consistent(reg, "day-2")
    [move] = moves_to(days.url, 2)
    assert (move["from"], move["run"]) == (1, "day-2")
    assert f"{move['id']}.json" in os.listdir(Path(days.url) / "history")  # its file is written
    assert reg.alias_record("champion")["event"] == move["id"]


def pins(url: str) -> list[dict]:
    """The holdout pins that ``dlr registry history --json`` reports."""
    result = CliRunner().invoke(main, ["registry", "history", url, "--json"])
    assert result.exit_code == 0, result.output
    return [e for e in json.loads(result.stdout) if e["event"] == "pin"]


@pytest.mark.parametrize("stage, repinned", [("meta-commit", False), ("meta-history", True)])
def test_a_repin_killed_at_its_commit_is_in_the_history_exactly_if_it_happened(
    days, tmp_path, stage, repinned
):
    """registry.json is the pin's commit and carries its event: killed just before it, no pin
    happened and none is recorded; just after it, the pin is recorded although its file in
    history/ is not written yet. The rerun pins (or finds pinned) and records it once."""
    days.ingest(1)
    days.retrain("day-1")
    days.ingest(2)
    other = write_holdout(str(tmp_path / "other.zarr"), 1000, FEATURES, seed=12)
    repin = ["--holdout", other, "--repin-holdout"]  # the last --holdout wins
    process = start_paused(days.command("day-2") + repin, stage)
    wait_for_pause(process)
    kill(process)
    reg = days.registry
    assert (reg.holdout["url"] == other) is repinned
    first, *rest = pins(days.url)
    assert first["to"]["url"] == days.holdout
    if repinned:
        [pin] = rest
        assert (pin["from"]["url"], pin["to"]["url"], pin["run"]) == (days.holdout, other, "day-2")
        assert f"{pin['id']}.json" not in os.listdir(Path(days.url) / "history")
    else:
        assert rest == []
    outcome = rerun_until_unlocked(days, "day-2", holdout=other, repin_holdout=True)
    assert outcome.exit_code in (PROMOTED, REJECTED) and outcome.version == 2
    [_, pin] = pins(days.url)
    assert (pin["to"]["url"], pin["to"]["sha256"]) == (other, reg.holdout["sha256"])
    assert f"{pin['id']}.json" in os.listdir(Path(days.url) / "history")
    assert reg.version(2).lineage["holdout"]["url"] == other


def fill(directory: Path, leave: int) -> Path:
    """Fill the filesystem of ``directory`` up to ``leave`` bytes (whole pages) of free space."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        block = b"\0" * (1 << 20)
        while True:
            try:
                os.write(fd, block)
            except OSError:
                break  # ENOSPC
        page = os.statvfs(directory).f_frsize
        os.ftruncate(fd, max(0, os.fstat(fd).st_size // page * page - leave))
    finally:
        os.close(fd)
    return filler


def champion_and_a_new_day(tmp_path, url) -> "Days":
    """A registry at ``url`` whose day 1 is the champion and whose day 2 is ingested."""
    days = Days(tmp_path)
    days.url = str(url)
    days.ingest(1)
    days.retrain("day-1")
    days.ingest(2)
    return days


def test_a_full_disk_during_the_version_write_leaves_the_champion_and_the_rerun_completes(
    tmp_path,
):
    with small_tmpfs(tmp_path / "small", "4m") as small:
        days = champion_and_a_new_day(tmp_path, small / "registry")
        champion = coefficients(days.registry, 1)
        process = start_paused(days.command("day-2"), "publish")  # evaluated, not registered
        wait_for_pause(process)
        kill(process)
        filler = fill(small, leave=2 * 4096)  # room for the lease, not for a version
        while (result := CliRunner().invoke(main, days.command("day-2")[1:])).exit_code == LOCKED:
            time.sleep(0.5)  # the killed run's lease expires
        assert result.exit_code == 1, result.output
        assert result.stderr == (
            f"dlr: error: cannot write version 2 to '{days.url}/versions/2': No space left on "
            "device; nothing was registered\n"
        )
        listed = CliRunner().invoke(main, ["registry", "list", days.url, "--json"])
        assert [v["version"] for v in json.loads(listed.stdout)] == [1]
        assert os.listdir(small / "registry" / "versions") == ["1"]  # no partial version
        reg = days.registry
        assert reg.alias("champion") == 1 and moves_to(days.url, 2) == []
        reg.verify_version(1)
        assert coefficients(reg, 1) == champion
        assert dlr.load(f"{days.url}@champion").n_features_in_ == FEATURES

        filler.unlink()
        outcome = rerun_until_unlocked(days, "day-2")
        assert (outcome.exit_code, outcome.decision, outcome.version) == (PROMOTED, "promoted", 2)
        assert_consistent(reg, "day-2")
        assert len(moves_to(days.url, 2)) == 1


def test_a_full_disk_at_any_write_of_a_run_is_one_line_and_the_rerun_completes(tmp_path):
    """The same run key, stopped by a full disk at each of its writes in turn — the lease, the
    first run.json, a checkpoint, the report, the last run.json — then run once more with space
    freed. Each time: exit 1 with one line naming the file, no partial file, the champion as it
    was (or, once the run has moved it, the new version, whole and recorded once)."""
    with small_tmpfs(tmp_path / "small", "4m") as small:
        days = champion_and_a_new_day(tmp_path, small / "registry")
        reg, run = days.registry, small / "registry" / "runs" / "day-2"
        champion = coefficients(reg, 1)
        go = tmp_path / "go"

        def full_disk_at(stage: str | None, file: str, what: str = "") -> None:
            """Run day-2 until ``stage``, fill the disk, let it go on: it fails writing
            ``file`` (a pattern; with no stage: the disk is full from the start)."""
            env = {**os.environ, "DLR_TEST_PAUSE_AT": stage or "", "DLR_TEST_RESUME_FILE": str(go)}
            process = subprocess.Popen(
                days.command("day-2"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            STARTED.append(process)
            if stage is not None:
                wait_for_pause(process)
            filler = fill(small, leave=0)
            go.touch()
            _, stderr = process.communicate(timeout=120)
            go.unlink()
            filler.unlink()
            assert process.returncode == 1, stderr
            expected = f"dlr: error: cannot write {what}'{re.escape(days.url)}/{file}': "
            assert re.fullmatch(expected + "No space left on device\n", stderr.decode()), stderr
            assert not os.path.exists(Path(days.url) / "lease.json")  # released
            hidden = [n for _, dirs, files in os.walk(run) for n in dirs + files if n[0] == "."]
            assert hidden == []  # no temporary left behind

        full_disk_at(None, "lease.json")
        assert not run.exists() and reg.alias("champion") == 1

        full_disk_at("run-record", "runs/day-2/run.json")  # the plan's record
        assert reg.run_record("day-2") is None and reg.alias("champion") == 1
        assert coefficients(reg, 1) == champion and [v.version for v in reg.versions()] == [1]

        full_disk_at("checkpoint", r"runs/day-2/checkpoints/ckpt-\d{8}-[0-9a-f]{8}", "checkpoint ")
        assert reg.run_record("day-2")["status"] == "training" and reg.alias("champion") == 1

        full_disk_at("version-written", "aliases/champion.json")  # version 2 registered
        assert reg.alias("champion") == 1 and [v.version for v in reg.versions()] == [1, 2]
        assert coefficients(reg, 1) == champion and dlr.load(f"{days.url}@champion")
        assert sorted(os.listdir(Path(days.url) / "aliases")) == ["champion.json"]

        full_disk_at("report", "runs/day-2/report.json")  # the rerun: version 2 promoted
        assert reg.run_record("day-2")["status"] == "evaluated"
        assert not (run / "report.json").exists()
        assert reg.alias("champion") == 2 and len(moves_to(days.url, 2)) == 1
        reg.verify_version(2)

        full_disk_at("run-record", "runs/day-2/run.json")  # the record of the finished run
        assert reg.run_record("day-2")["status"] == "evaluated"  # the earlier one, whole

        outcome = days.retrain("day-2")
        assert (outcome.exit_code, outcome.decision, outcome.version) == (PROMOTED, "promoted", 2)
        assert_consistent(reg, "day-2")
        assert len(moves_to(days.url, 2)) == 1
        assert json.loads((run / "report.json").read_text())["version"] == 2
        assert coefficients(reg, 1) == champion


# --- drift ----------------------------------------------------------------------------------


@pytest.fixture
def drift_reads(monkeypatch):
    """Every chunk read while the run computes drift, as (store path, chunk)."""
    seen, inside = [], []
    span_drift = retrain_module.span_drift

    def watched(*args, **kwargs):
        inside.append(True)
        try:
            return span_drift(*args, **kwargs)
        finally:
            inside.pop()

    def counting_read(arr, samples_first, start, stop, origin, chunk, *rest):
        if inside:
            seen.append((str(arr.store_path), chunk))
        return read_block(arr, samples_first, start, stop, origin, chunk, *rest)

    monkeypatch.setattr(retrain_module, "span_drift", watched)
    monkeypatch.setattr(sources, "read_block", counting_read)
    return seen


def train_rows(span):
    group = zarr.open_group(span.train_url, mode="r")
    return group["X"][:], group["y"][:]


def test_drift_of_the_new_span_against_the_training_set_reads_no_data(days, drift_reads):
    days.ingest(1)
    days.retrain("day-1")
    days.ingest(2, rows=1000)
    shift = days.retrain("day-2").record["drift"]
    assert drift_reads == []
    reg = days.registry
    old, new = reg.spans()
    # the statistics of the rows themselves: the older span's train rows against the new one's
    edges = Edges.from_json(reg.schema["drift"])
    want = drift(of_rows(*train_rows(old), edges), of_rows(*train_rows(new), edges))
    assert (shift["reference_samples"], shift["new_samples"]) == (old.train_rows, new.train_rows)
    assert shift["bins"] == 10
    assert shift["label_rates"] == want["label_rates"]
    for got, expected in zip(shift["features"], want["features"], strict=True):
        assert got["psi"] == pytest.approx(expected["psi"], rel=1e-12, abs=1e-15)
        assert got["smd"] == pytest.approx(expected["smd"], rel=1e-9, abs=1e-12)


def test_a_registry_from_before_span_summaries_retrains_and_gets_them_back(days, drift_reads):
    days.ingest(1)
    days.retrain("day-1")
    days.ingest(2)
    old = Days(days.root / "old")  # the same registry as dlr kept it before summaries
    shutil.copytree(days.url, old.url)
    old.holdout = days.holdout
    for path in Path(old.url).glob("*/*/summary.json"):
        path.unlink()
    meta = json.loads((Path(old.url) / "registry.json").read_text())
    del meta["schema"]["drift"]
    (Path(old.url) / "registry.json").write_text(json.dumps(meta))
    day3 = write_batch(str(days.root / "day3.npz"), 3, days.rows, FEATURES)
    with pytest.raises(DataError, match="from before drift bins were fixed at ingest"):
        ingest([day3], Registry(old.url), drift_bins=10)  # its next retrain fixes them...
    for d in (days, old):
        ingest([day3], Registry(d.url))  # ...and until then its spans get no summary
    assert not list(Path(old.url).glob("*/*/summary.json"))
    messages = []
    legacy = retrain(old.url, old.config(), run_key="day-2", echo=messages.append)
    assert [m for m in messages if m.startswith("drift:")] == [
        "drift: 3 span(s) have no summary (ingested before dlr kept them): one pass over "
        "their train rows, stored for later runs; drift bins fixed from the range of span "
        f"{Registry(old.url).spans()[0].id}"
    ]
    assert drift_reads  # that pass
    # the edges come from the oldest span, the first ingest's only source: the same edges
    assert Registry(old.url).schema == days.registry.schema
    assert len(list(Path(old.url).glob("spans/*/summary.json"))) == 3
    expected = days.retrain("day-2").record["drift"]
    for got, want in zip(legacy.record["drift"]["features"], expected["features"], strict=True):
        assert got["psi"] == want["psi"]  # the same histograms
        assert got["smd"] == pytest.approx(want["smd"], rel=1e-9, abs=1e-12)
    # the next run reads no data for drift
    drift_reads.clear()
    old.ingest(4)
    assert old.retrain("day-4").record["drift"] is not None
    assert drift_reads == []


def test_a_psi_threshold_blocks_the_promotion_of_a_shifted_batch(days):
    gate = (*GATE, "psi<=0.25")
    days.ingest(1)
    days.retrain("day-1", gate=gate)
    batch = np.load(write_batch(str(days.root / "day2.npz"), 2, days.rows, FEATURES))
    x = batch["X"].copy()
    x[:, 0] += 3 * x[:, 0].std()  # one feature moved by three standard deviations
    np.savez(days.root / "shifted.npz", X=x, y=batch["y"])
    ingest([str(days.root / "shifted.npz")], days.registry)
    outcome = days.retrain("day-2", gate=gate)
    assert (outcome.exit_code, outcome.decision) == (REJECTED, "rejected")
    assert "psi<=0.25 failed:" in outcome.reason
    assert days.registry.alias("champion") == 1
    assert outcome.record["drift"]["features"][0]["psi"] > 0.25


# --- warm start ---------------------------------------------------------------------------


def test_warm_start_after_ten_percent_more_rows_reaches_the_cold_optimum_in_half_the_passes(days):
    params = {"solver": "lbfgs", "tol": 1e-8, "max_iter": 200}
    days.rows = 6000
    days.ingest(1)
    assert days.retrain("day-1", params=params).version == 1
    champion = dlr.load(f"{days.url}@champion")
    assert champion.lbfgs_memory_.shape[1:] == (10, 1, FEATURES + 1)  # saved with the model
    days.ingest(2, rows=600)
    outcome = days.retrain("day-2", params=params)
    assert outcome.decision == "promoted"
    reg = days.registry
    training = reg.run_record("day-2")["training"]
    warm = dlr.load(reg.model_url(outcome.version))
    cold = LogisticRegression(**params).fit(training_source(reg, reg.spans()))
    assert training["warm_start"] and warm.converged_ and cold.converged_
    f_cold, f_warm = cold.loss_history_[-1], warm.loss_history_[-1]
    assert abs(f_warm - f_cold) <= 1e-10 * abs(f_cold)  # the same optimum (target: 1e-6)
    assert training["n_passes"] == warm.n_passes_ <= 0.5 * cold.n_passes_


# --- the demo -------------------------------------------------------------------------------


def test_the_retraining_demo_tells_the_four_days(tmp_path):
    lines = []
    run_retrain_demo(str(tmp_path / "demo"), rows=4000, n_features=4, echo=lines.append)
    text = "\n".join(lines)
    assert "day 1: retrain → promoted (exit 0), version 1" in text
    assert "day 2: retrain → promoted (exit 0), version 2" in text
    assert "day 3: retrain → rejected (exit 3), version 3" in text
    assert "rollback: champion is version 1" in text
    assert "day 4: day2-resent.npz already committed" in text
    assert "day 4: retrain → nothing-new (exit 4)" in text
    reg = Registry(str(tmp_path / "demo" / "registry"))
    assert reg.alias("champion") == 2
    assert [v.lineage["decision"] for v in reg.versions()] == ["promoted", "promoted", "rejected"]
