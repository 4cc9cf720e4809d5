"""Shared pieces of the registry tests: batches of data, CLI runs, fitted models."""

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
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
