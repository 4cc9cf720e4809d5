"""Shared pieces of the registry tests: batches of data, CLI runs, fitted models."""

import os
import signal
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

import dlr
from dlr.cli import main

TRUE_COEF = np.array([1.0, -2.0, 0.5])


def table(m: int, seed: int) -> pa.Table:
    """A batch: features a, b, c (float64) and an int64 label from a logistic model."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, 3))
    y = (X @ TRUE_COEF + rng.logistic(size=m) > 0).astype(np.int64)
    return pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "label": y})


def run(*args) -> "CliRunner.Result":
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args) -> str:
    result = run(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def refused(*args) -> str:
    """The one-line error of a command that must fail with exit status 1."""
    result = run(*args)
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.stderr.startswith("dlr: error: ") and result.stderr.count("\n") == 1
    return result.stderr


def spawn(code: str, *args, env: dict | None = None) -> subprocess.Popen:
    """A Python process running ``code`` with ``args`` (PYTHONPATH inherited), pipes open."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def killed_at(stage: str, *args) -> subprocess.Popen:
    """``dlr ARGS`` in a process of its own, SIGKILLed where it pauses at ``stage``."""
    process = spawn("from dlr.cli import main; main()", *args,
                    env={"DLR_TEST_PAUSE_AT": stage})  # fmt: skip
    try:
        assert process.stderr.readline() == f"dlr: paused at {stage}\n"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
        process.communicate()
    return process


def fitted(source, max_iter: int = 5) -> dlr.LogisticRegression:
    return dlr.LogisticRegression(max_iter=max_iter, tol=0).fit(source)


def tree(path) -> dict:
    """{relative path: bytes} of every file under ``path`` (to compare before/after)."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            full = os.path.join(root, f)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, path)] = fh.read()
    return out


DLR = os.path.join(os.path.dirname(sys.executable), "dlr")


def race_two_ingests(registry: str, first: str, second: str, tmp_path, options=()) -> list:
    """Two real ``dlr ingest`` processes on one registry, interleaved at the worst point: the
    first pauses inside its commit, between reading spans.json and writing it back; the second
    is then let go to commit its own span, and given two seconds to do so; then the first goes
    on. A commit that does not exclude or survive the other (lease, compare-and-swap) loses the
    second span. Returns each process's (exit status, stderr)."""
    started = []

    def start(source: str, stage: str, go) -> subprocess.Popen:
        env = {**os.environ, "DLR_TEST_PAUSE_AT": stage, "DLR_TEST_RESUME_FILE": str(go)}
        command = [DLR, "ingest", source, "--registry", registry, *options]
        started.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True))
        for line in started[-1].stderr:
            if line.startswith("dlr: paused at"):
                return started[-1]
        raise AssertionError(f"{command} exited ({started[-1].wait()}) before pausing")

    try:
        a = start(first, "spans-commit", tmp_path / "go-first")
        b = start(second, "before-commit", tmp_path / "go-second")
        (tmp_path / "go-second").touch()
        try:
            b.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass  # waiting for the lease the first holds
        (tmp_path / "go-first").touch()
        return [(p.wait(timeout=120), p.stderr.read()) for p in (a, b)]
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
                p.wait()


@contextmanager
def small_tmpfs(path, size: str):
    """A tmpfs of ``size`` (e.g. "4m") mounted at ``path`` for the block, to fill the disk for
    real (root only: the test is skipped where mounting is not allowed)."""
    path.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
