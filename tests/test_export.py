"""ONNX export: the graph onnxruntime runs gives dlr's probabilities (to float32 precision) and
labels, for binary and multinomial models, standardized or not, from Python and the CLI."""

import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import zarr
from click.testing import CliRunner

import dlr
from dlr.cli import main
from dlr.export import OPSET, export_onnx, to_onnx
from dlr.synthetic import make_dataset

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def run_onnx(path_or_bytes, X: np.ndarray):
    session = onnxruntime.InferenceSession(path_or_bytes, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["label", "probabilities"]
    return session.run(None, {"X": X.astype(np.float32)})


def features(n: int = 400, seed: int = 0) -> np.ndarray:
    # Badly scaled columns: standardization must be folded into the exported coefficients.
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 5)) * [1.0, 10.0, 300.0, 0.05, 3.0] + [0, 5, -100, 1, 0]).astype(
        np.float32
    )


@pytest.mark.parametrize("standardize", [False, True], ids=["raw", "standardized"])
@pytest.mark.parametrize(
    "classes",
    [np.array([0, 1]), np.array([-1, 3, 7]), np.array(["cat", "dog", "emu"])],
    ids=["binary", "3-class", "3-string-classes"],
)
def test_onnxruntime_gives_dlrs_probabilities_and_labels(tmp_path, classes, standardize):
    X = features()
    y = classes[np.random.default_rng(1).integers(0, len(classes), len(X))]
    model = dlr.LogisticRegression(standardize=standardize, C=10.0).fit(X, y)
    path = tmp_path / "model.onnx"
    export_onnx(model, path)
    labels, proba = run_onnx(str(path), X)
    assert proba.dtype == np.float32 and proba.shape == (len(X), len(classes))
    np.testing.assert_allclose(proba, model.predict_proba(X), rtol=FLOAT32_EPS, atol=0)
    np.testing.assert_array_equal(labels, model.predict(X))
    loaded = onnx.load(str(path))
    assert [(o.domain, o.version) for o in loaded.opset_import] == [("", OPSET)]


def test_export_needs_a_fitted_model(tmp_path):
    with pytest.raises(dlr.ModelError, match="not fitted"):
        to_onnx(dlr.LogisticRegression())


def test_cli_exports_a_trained_model_atomically(tmp_path):
    data, model_dir, out = tmp_path / "data.zarr", tmp_path / "model", tmp_path / "model.onnx"
    make_dataset(str(data), 1200, 4, chunk_samples=500, seed=3)
    runner = CliRunner()
    for args in (
        ["train", data, "--model", model_dir],
        ["export", model_dir, "--format", "onnx", "--out", out],
    ):
        result = runner.invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    assert f"wrote {out}: ONNX (opset {OPSET})" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.zarr", "model", "model.onnx"]
    X = zarr.open_group(str(data), mode="r")["X"][:]
    model = dlr.load(str(model_dir))
    labels, proba = run_onnx(str(out), X)
    np.testing.assert_allclose(proba, model.predict_proba(X), rtol=FLOAT32_EPS, atol=0)
    np.testing.assert_array_equal(labels, model.predict(X))

    again = runner.invoke(main, ["export", str(model_dir), "--out", str(out)])
    assert again.exit_code == 1
    assert "exists; choose another path or pass --overwrite" in again.output
    replaced = runner.invoke(main, ["export", str(model_dir), "--out", str(out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output


def test_a_missing_onnx_package_is_a_one_line_error(monkeypatch):
    model = dlr.LogisticRegression().fit(features(), np.arange(400) % 2)
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx → ImportError
    with pytest.raises(dlr.DlrError, match=r"needs the onnx package: pip install onnx"):
        to_onnx(model)
