"""The command line's guard rails: a model path that would overwrite the data is refused even with
--overwrite, and -q / -v work before or after the command's name."""

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dlr.cli import main
from dlr.synthetic import make_dataset

DLR_SCRIPT = str(Path(sys.executable).parent / "dlr")


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.zarr"
    make_dataset(str(path), 600, 3, chunk_samples=200, seed=4)
    return path


@pytest.mark.parametrize(
    "model, relation",
    [
        ("data.zarr", "is"),
        ("data.zarr/X", "is inside"),
        ("data.zarr/sub/m", "is inside"),
        (".", "holds"),
    ],
)
def test_a_model_path_that_would_destroy_the_dataset_is_refused(
    tmp_path, data, model, relation, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = CliRunner().invoke(
        main, ["train", "data.zarr", "--model", model, "--overwrite", "--max-iter", "2"]
    )
    assert result.exit_code == 1
    assert result.output == (
        f"dlr: error: --model '{model}' {relation} the dataset 'data.zarr': writing the model "
        "there would destroy the data; choose a model path outside it\n"
    )
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def dlr_process(*args) -> subprocess.CompletedProcess:
    """A real ``dlr`` process (its log records go to its own stderr)."""
    return subprocess.run(
        [DLR_SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_quiet_and_verbose_after_the_command(tmp_path, data):
    train = ["train", data, "--model", tmp_path / "model", "--overwrite"]
    quiet, verbose = (dlr_process(*train, flag) for flag in ("-q", "-v"))
    for result in (quiet, verbose):
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("trained on ")
    assert quiet.stderr == ""
    assert " iter 1 " in verbose.stderr
    assert "cache_size=auto: 3 of 3 chunks of" in verbose.stderr
