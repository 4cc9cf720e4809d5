"""``import dlr`` and the command line start without the heavy libraries, ``dask dlr`` is the
same command line, and the package is installed under the name its hints print."""

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import dlr
from dlr._version import DISTRIBUTION
from dlr.errors import DlrError

ROOT = Path(__file__).resolve().parent.parent
DLR_SCRIPT = str(Path(sys.executable).parent / "dlr")
HEAVY = ("sklearn", "zarr", "dask.array", "scipy")

LOADED_BY_IMPORT = """
import sys
import {module}
print(" ".join(m for m in {heavy!r} if m in sys.modules))
"""


def python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (this one has everything imported); its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout.strip()


@pytest.mark.parametrize("module", ["dlr", "dlr.cli"])
def test_importing_dlr_or_its_command_line_loads_no_heavy_library(module):
    # dlr.cli is what dask imports at every start of `dask scheduler`, `dask worker`...
    assert python(LOADED_BY_IMPORT.format(module=module, heavy=HEAVY)) == ""


def test_the_estimator_and_not_fitted_error_load_on_first_use():
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    from dlr.estimator import LogisticRegression, load

    assert dlr.LogisticRegression is LogisticRegression and dlr.load is load
    assert issubclass(dlr.NotFittedError, SklearnNotFittedError)
    assert issubclass(dlr.NotFittedError, DlrError)
    assert {"LogisticRegression", "load", "NotFittedError"} <= set(dir(dlr))
    with pytest.raises(AttributeError, match="no attribute 'LogisticRegresion'"):
        dlr.LogisticRegresion  # noqa: B018


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_dlr_version_prints_the_version():
    assert run(DLR_SCRIPT, "--version") == f"dlr, version {dlr.__version__}"


def test_the_command_line_is_also_dask_dlr():
    assert run(sys.executable, "-m", "dask", "dlr", "--version") == (
        f"dlr, version {dlr.__version__}"
    )
    assert "train" in run(sys.executable, "-m", "dask", "dlr", "--help")


def test_the_distribution_is_the_one_pyproject_names_and_installs_dlr():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (project["name"], project["version"]) == (DISTRIBUTION, dlr.__version__)
    assert DISTRIBUTION in importlib.metadata.packages_distributions()["dlr"]
    assert importlib.metadata.version(DISTRIBUTION) == dlr.__version__


def test_the_install_hint_names_the_installed_distribution(monkeypatch):
    from dlr.plotting import require_matplotlib

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    with pytest.raises(DlrError) as error:
        require_matplotlib()
    name = importlib.metadata.metadata(DISTRIBUTION)["Name"]
    assert f"pip install '{name}[plot]'" in str(error.value)
