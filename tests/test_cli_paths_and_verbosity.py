"""The command line's guard rails: a model path that would overwrite the data is refused even with
--overwrite, and -q / -v work before or after the command's name."""

import re
import signal
import subprocess
import sys
import time
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


def test_the_demo_keeps_its_model_and_a_real_png_loss_curve(monkeypatch, tmp_path):
    import matplotlib.image

    import dlr

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where the demo makes its directory
    result = CliRunner().invoke(
        main, ["demo", "--samples", 6000, "--chunk-samples", 2000, "--max-iter", 5]
    )
    assert result.exit_code == 0, result.output
    (directory,) = tmp_path.glob("dlr-demo-*")
    assert f"model saved to {directory / 'model'}" in result.stdout
    assert f"the model and the loss curve are kept in {directory}" in result.stdout
    assert sorted(p.name for p in directory.iterdir()) == ["loss.png", "model"]  # data removed
    assert dlr.load(str(directory / "model")).n_iter_ == 5
    png = directory / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(str(png)).shape[:2] == (400, 700)


def test_an_interrupted_run_names_the_checkpoint_to_resume_from(tmp_path, data):
    checkpoints = tmp_path / "ckpt"
    train = [DLR_SCRIPT, "train", str(data), "--model", str(tmp_path / "m"), "--solver", "gd"]
    train += ["--max-iter", "100000", "--tol", "0", "--checkpoint", str(checkpoints), "-q"]
    # Ctrl-C's default action even when this suite runs as a background job (whose children
    # inherit SIGINT ignored, and Python then installs no KeyboardInterrupt handler)
    restore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(train, stderr=subprocess.PIPE, text=True, preexec_fn=restore_sigint)
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith("ckpt-") for p in checkpoints.glob("*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert re.fullmatch(
        r"dlr: interrupted; nothing was published; the last checkpoint is iteration \d+ "
        rf"\('{checkpoints}/ckpt-[^']+'\): run the same command again with --resume "
        r"\(resume=True\) to continue from it\n",
        stderr,
    ), stderr
    assert not (tmp_path / "m").exists()
