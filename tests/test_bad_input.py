"""Bad input gets a clear one-line error naming what is wrong and where, and nothing is written.

From Python the error is a :class:`dlr.DataError` (or another :class:`dlr.DlrError`); from the
command line it is a non-zero exit with one line ``dlr: error: ...`` on stderr and no traceback.
Every store here is a real zarr v3 group on disk; malformed ones are written directly with zarr.
"""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from sklearn.exceptions import DataConversionWarning

import dlr
from dlr.cli import main
from dlr.dataset import FEATURES_FIRST, SAMPLES_FIRST, codecs

N_SAMPLES = 120
N_FEATURES = 4
CHUNK = 30  # 4 chunks: samples 0–29, 30–59, 60–89, 90–119
DLR_SCRIPT = str(Path(sys.executable).parent / "dlr")


# --- helpers ------------------------------------------------------------------------------------


def good_arrays(n_samples=N_SAMPLES, n_features=N_FEATURES, seed=0):
    """Features (m, n) float64 and labels (m,) uint8 holding both classes."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    y = X @ np.linspace(1, -1, n_features) + 0.3 * rng.standard_normal(n_samples) > 0
    return X, y.astype(np.uint8)


def put_array(group, name, data, chunks, dimension_names=None):
    """Write ``data`` as array ``name`` of ``group`` with dlr's codecs (numbers) or zarr's
    defaults (strings), every chunk stored."""
    data = np.asarray(data)
    if data.dtype.kind in "biufc":
        options = codecs()
    else:
        options = {"config": {"write_empty_chunks": True}}
    arr = group.create_array(
        name,
        shape=data.shape,
        chunks=chunks,
        dtype=data.dtype,
        dimension_names=dimension_names,
        **options,
    )
    if data.size:
        arr[...] = data
    return arr


def write_dataset(path, X, y, *, chunk=CHUNK, y_chunk=None, x_chunks=None, features_first=False):
    """A dlr dataset at ``path`` from X (samples × features) and y; ``None`` omits an array."""
    group = zarr.open_group(str(path), mode="w")
    if X is not None:
        X = np.asarray(X)
        if X.ndim == 2 and features_first:
            put_array(group, "X", X.T, x_chunks or (max(X.shape[1], 1), chunk), FEATURES_FIRST)
        elif X.ndim == 2:
            put_array(group, "X", X, x_chunks or (chunk, max(X.shape[1], 1)), SAMPLES_FIRST)
        else:
            put_array(group, "X", X, x_chunks or (chunk,) * X.ndim)
    if y is not None:
        put_array(group, "y", y, (y_chunk or chunk,), ("sample",))
    return str(path)


def flip_bytes(file: Path) -> None:
    """Corrupt a stored chunk in place: invert a few bytes in its middle."""
    data = bytearray(file.read_bytes())
    mid = len(data) // 2
    for i in range(mid, min(mid + 8, len(data))):
        data[i] ^= 0xFF
    file.write_bytes(bytes(data))


def snapshot(root: Path) -> dict:
    """Every file and directory under ``root`` with its size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def assert_mentions(message: str, *words: str) -> None:
    for word in words:
        assert word in message, f"{word!r} not in error message {message!r}"


def assert_one_line_cli_error(result, *words: str) -> str:
    """A clean CLI failure: SystemExit(1), one ``dlr: error:`` line on stderr, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    err = result.stderr.strip()
    assert err.startswith("dlr: error: "), err
    assert "\n" not in err, f"error is not one line: {err!r}"
    assert "Traceback" not in result.output
    assert_mentions(err, *words)
    return err


def assert_nothing_published(parent: Path, name: str) -> None:
    """Neither ``parent/name`` nor a staging sibling ``.name.tmp-*``/``.name.old-*`` exists."""
    assert not (parent / name).exists()
    leftovers = [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]
    assert leftovers == []


def dlr_cli(*args: str):
    return CliRunner().invoke(main, list(args))


# --- malformed datasets -------------------------------------------------------------------------


def missing_path(path):
    return str(path)


def empty_directory(path):
    path.mkdir()
    return str(path)


def without_x(path):
    return write_dataset(path, None, good_arrays()[1])


def without_y(path):
    return write_dataset(path, good_arrays()[0], None)


def x_is_a_group(path):
    write_dataset(path, None, good_arrays()[1])
    zarr.open_group(str(path), mode="a").create_group("X")
    return str(path)


def fewer_labels_than_samples(path):
    X, y = good_arrays()
    return write_dataset(path, X, y[:-7])


def bare_array(path):
    """A path to an array, not to the group holding it."""
    zarr.create_array(str(path), shape=(N_SAMPLES, N_FEATURES), dtype="float64")
    return str(path)


def x_one_dimensional(path):
    X, y = good_arrays()
    return write_dataset(path, X[:, 0], y)


def x_with_dtype(dtype):
    def build(path):
        X, y = good_arrays()
        if dtype == "str":
            X = X.astype(np.dtypes.StringDType())
        elif dtype == "bool":
            X = X > 0
        else:
            X = X.astype(dtype)
        return write_dataset(path, X, y)

    return build


def y_with_dtype(dtype):
    def build(path):
        X, y = good_arrays()
        y = y.astype(np.dtypes.StringDType() if dtype == "str" else dtype)
        return write_dataset(path, X, y)

    return build


def zero_samples(path):
    return write_dataset(path, np.zeros((0, N_FEATURES)), np.zeros(0, np.uint8))


def zero_features(path):
    return write_dataset(path, np.zeros((N_SAMPLES, 0)), good_arrays()[1])


def label_at(sample, value, dtype, *, features_first=False):
    def build(path):
        X, y = good_arrays()
        y = y.astype(dtype)
        y[sample] = value
        return write_dataset(path, X, y, features_first=features_first)

    return build


def x_value_at(sample, feature, value, *, features_first=False, dtype="float64"):
    def build(path):
        X, y = good_arrays()
        X = X.astype(dtype)
        X[sample, feature] = value
        return write_dataset(path, X, y, features_first=features_first)

    return build


def only_class(label):
    def build(path):
        X, _ = good_arrays()
        return write_dataset(path, X, np.full(N_SAMPLES, label, np.uint8))

    return build


def corrupt_chunk(array, key):
    def build(path):
        write_dataset(path, *good_arrays(), features_first=key == "0/1")
        flip_bytes(Path(path, array, "c", *key.split("/")))
        return str(path)

    return build


def deleted_chunk(array, key, *, features_first=False):
    def build(path):
        write_dataset(path, *good_arrays(), features_first=features_first)
        Path(path, array, "c", *key.split("/")).unlink()
        return str(path)

    return build


#: (builder, key words of the message). ``{path}`` stands for the dataset path.
BAD_DATASETS = [
    pytest.param(missing_path, ["no zarr group", "{path}"], id="missing dataset path"),
    pytest.param(empty_directory, ["no zarr group", "{path}"], id="directory is not a zarr group"),
    pytest.param(without_x, ["no array 'X'", "{path}", "arrays: y"], id="missing X array"),
    pytest.param(without_y, ["no array 'y'", "{path}", "arrays: X"], id="missing y array"),
    pytest.param(x_is_a_group, ["X", "is a group, not an array"], id="X is a group"),
    pytest.param(
        fewer_labels_than_samples,
        ["y", "shape (113,)", "120 samples"],
        id="X and y sample counts differ",
    ),
    pytest.param(
        bare_array, ["{path}", "is a zarr array, not a group", "--x/--y"], id="path to an array"
    ),
    pytest.param(x_one_dimensional, ["must be 2-D", "(120,)"], id="X is 1-D"),
    pytest.param(x_with_dtype("str"), ["X", "dtype", "real numbers"], id="X of strings"),
    pytest.param(x_with_dtype("bool"), ["X", "dtype bool", "real numbers"], id="X of booleans"),
    pytest.param(
        x_with_dtype("complex128"),
        ["X", "dtype complex128", "Complex data not supported"],
        id="complex X",
    ),
    pytest.param(
        y_with_dtype("complex64"),
        ["y", "dtype complex64", "Complex data not supported"],
        id="complex y",
    ),
    pytest.param(y_with_dtype("str"), ["y", "dtype", "real numbers"], id="y of strings"),
    pytest.param(zero_samples, ["0 sample(s)", "shape=(0, 4)", "minimum of 1"], id="0 samples"),
    pytest.param(
        zero_features, ["0 feature(s)", "shape=(120, 0)", "minimum of 1"], id="0 features"
    ),
    pytest.param(
        label_at(37, 2.5, np.float64),
        ["chunk 1", "samples 30–59", "has 2.5 at sample 37", "integer class labels", "{path}"],
        id="label 2.5 at sample 37 in chunk 1",
    ),
    pytest.param(
        label_at(95, -1.5, np.float32),
        ["chunk 3", "has -1.5 at sample 95"],
        id="label -1.5 in the last chunk",
    ),
    pytest.param(
        label_at(0, 0.5, np.float64),
        ["chunk 0", "has 0.5 at sample 0"],
        id="label 0.5 at the first sample",
    ),
    pytest.param(
        label_at(37, 2.5, np.float64, features_first=True),
        ["chunk 1", "has 2.5 at sample 37"],
        id="label 2.5 with features-first X",
    ),
    pytest.param(
        x_value_at(45, 2, np.nan),
        ["X", "NaN or inf", "chunk 1", "samples 30–59", "first at sample 45", "{path}"],
        id="NaN in X",
    ),
    pytest.param(
        x_value_at(71, 0, np.inf, dtype="float32"),
        ["X", "NaN or inf", "chunk 2", "first at sample 71"],
        id="inf in float32 X",
    ),
    pytest.param(
        x_value_at(100, 3, -np.inf, features_first=True),
        ["X", "NaN or inf", "chunk 3", "first at sample 100"],
        id="-inf in features-first X",
    ),
    pytest.param(
        label_at(64, np.nan, np.float32),
        ["y", "NaN", "chunk 2", "first at sample 64"],
        id="NaN in y",
    ),
    pytest.param(only_class(0), ["only class 0", "at least two classes"], id="only class 0"),
    pytest.param(only_class(1), ["only class 1", "at least two classes"], id="only class 1"),
    pytest.param(
        corrupt_chunk("X", "1/0"),
        ["X", "chunk 1", "samples 30–59", "corrupt"],
        id="corrupt X chunk",
    ),
    pytest.param(
        corrupt_chunk("X", "0/1"),
        ["X", "chunk 1", "samples 30–59", "corrupt"],
        id="corrupt features-first X chunk",
    ),
    pytest.param(
        corrupt_chunk("y", "2"), ["y", "chunk 2", "samples 60–89", "corrupt"], id="corrupt y chunk"
    ),
    pytest.param(
        deleted_chunk("X", "2/0"), ["missing", "'X/c/2/0'", "{path}"], id="missing X chunk"
    ),
    pytest.param(
        deleted_chunk("X", "0/3", features_first=True),
        ["missing", "'X/c/0/3'"],
        id="missing features-first X chunk",
    ),
    pytest.param(deleted_chunk("y", "1"), ["missing", "'y/c/1'"], id="missing y chunk"),
]


def expected_words(words, path):
    return [w.replace("{path}", path) for w in words]


@pytest.mark.parametrize(("build", "words"), BAD_DATASETS)
def test_fit_on_a_bad_dataset_raises_a_data_error_naming_the_problem(tmp_path, build, words):
    path = build(tmp_path / "data.zarr")
    before = snapshot(tmp_path)
    with pytest.raises(dlr.DataError) as info:
        dlr.LogisticRegression(max_iter=5).fit(path)
    message = str(info.value)
    assert "\n" not in message
    assert_mentions(message, *expected_words(words, path))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("build", "words"), BAD_DATASETS)
def test_train_cli_on_a_bad_dataset_exits_with_one_line_and_writes_no_model(tmp_path, build, words):
    path = build(tmp_path / "data.zarr")
    before = snapshot(tmp_path)
    result = dlr_cli("train", path, "--model", str(tmp_path / "model"), "--max-iter", "5")
    assert_one_line_cli_error(result, *expected_words(words, path))
    assert_nothing_published(tmp_path, "model")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("build", "words"),
    [
        pytest.param(missing_path, ["no zarr group"], id="missing dataset path"),
        pytest.param(
            label_at(37, 2.5, np.float64),
            ["chunk 1", "has 2.5 at sample 37"],
            id="label 2.5 at sample 37",
        ),
        pytest.param(deleted_chunk("X", "1/0"), ["missing", "'X/c/1/0'"], id="missing chunk"),
    ],
)
def test_train_as_a_real_process_fails_with_one_error_line_and_no_traceback(tmp_path, build, words):
    path = build(tmp_path / "data.zarr")
    proc = subprocess.run(
        [DLR_SCRIPT, "train", path, "--model", str(tmp_path / "model")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlr: error: "), proc.stderr
    assert_mentions(lines[0], *words)
    assert proc.stdout == ""
    assert_nothing_published(tmp_path, "model")


# --- NumPy input --------------------------------------------------------------------------------


def with_x_value(value, sample=5):
    X, y = good_arrays()
    X[sample, 1] = value
    return X, y


def with_labels(labels):
    X, _ = good_arrays()
    return X, np.asarray(labels)


@pytest.mark.parametrize(
    ("X", "y", "words"),
    [
        pytest.param(
            *with_x_value(np.nan),
            ["X", "NaN or inf", "the input array", "first at sample 5"],
            id="NaN in X",
        ),
        pytest.param(
            *with_x_value(np.inf, sample=77),
            ["X", "NaN or inf", "first at sample 77"],
            id="inf in X",
        ),
        pytest.param(
            *with_labels(np.where(np.arange(N_SAMPLES) % 2, 1.5, 0)),
            ["integer class labels", "has 1.5 at sample 1"],
            id="labels 0 and 1.5",
        ),
        pytest.param(
            *with_labels(np.r_[np.zeros(50), np.nan, np.ones(69)]),
            ["y", "NaN", "first at sample 50"],
            id="NaN in y",
        ),
        pytest.param(
            *with_labels(np.ones(N_SAMPLES)),
            ["only class 1", "at least two classes"],
            id="only one class",
        ),
        pytest.param(
            good_arrays()[0],
            good_arrays()[1][:100],
            ["y has shape (100,)", "120 samples"],
            id="X and y lengths differ",
        ),
        pytest.param(
            good_arrays()[0],
            np.stack([good_arrays()[1]] * 2, axis=1),
            ["y has shape (120, 2)"],
            id="2-D y",
        ),
        pytest.param(
            good_arrays()[0][:, 0], good_arrays()[1], ["must be 2-D", "(120,)"], id="1-D X"
        ),
        pytest.param(
            good_arrays()[0][None], good_arrays()[1], ["must be 2-D", "(1, 120, 4)"], id="3-D X"
        ),
        pytest.param(good_arrays()[0] + 1j, good_arrays()[1], ["X", "complex128"], id="complex X"),
        pytest.param(
            good_arrays()[0].astype(str), good_arrays()[1], ["X", "dtype <U"], id="X of strings"
        ),
        pytest.param(good_arrays()[0], good_arrays()[1] + 0j, ["y", "complex128"], id="complex y"),
        pytest.param(
            np.zeros((0, 3)), np.zeros(0), ["0 sample(s)", "minimum of 1"], id="0 samples"
        ),
        pytest.param(
            np.zeros((10, 0)), np.arange(10) % 2, ["0 feature(s)", "minimum of 1"], id="0 features"
        ),
    ],
)
def test_fit_on_bad_numpy_arrays_raises_a_data_error(X, y, words):
    model = dlr.LogisticRegression(max_iter=5)
    with pytest.raises(dlr.DataError) as info:
        model.fit(X, y)
    assert_mentions(str(info.value), *words)
    assert not hasattr(model, "coef_")


# --- predict and evaluate -----------------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path):
    """A model trained on a good dataset with N_FEATURES features."""
    X, y = good_arrays(seed=1)
    path = tmp_path / "model"
    dlr.LogisticRegression(max_iter=10).fit(X, y).save(str(path))
    return path


DEFECTS_FOR_SCORING = [
    pytest.param(
        x_value_at(45, 2, np.nan), ["NaN or inf", "chunk 1", "first at sample 45"], id="NaN in X"
    ),
    pytest.param(
        x_value_at(100, 0, np.inf, features_first=True),
        ["NaN or inf", "chunk 3", "first at sample 100"],
        id="inf in features-first X",
    ),
    pytest.param(
        corrupt_chunk("X", "1/0"), ["chunk 1", "samples 30–59", "corrupt"], id="corrupt X chunk"
    ),
    pytest.param(deleted_chunk("X", "2/0"), ["missing", "'X/c/2/0'"], id="missing X chunk"),
    pytest.param(missing_path, ["no zarr group"], id="missing dataset path"),
]


@pytest.mark.parametrize(("build", "words"), DEFECTS_FOR_SCORING)
def test_predict_on_bad_data_fails_cleanly_and_leaves_no_output(tmp_path, model_dir, build, words):
    path = build(tmp_path / "data.zarr")
    before = snapshot(tmp_path)
    result = dlr_cli("predict", str(model_dir), path, "--out", str(tmp_path / "p.zarr"))
    assert_one_line_cli_error(result, *words)
    assert_nothing_published(tmp_path, "p.zarr")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("build", "words"), DEFECTS_FOR_SCORING)
def test_evaluate_on_bad_data_fails_cleanly(tmp_path, model_dir, build, words):
    path = build(tmp_path / "data.zarr")
    before = snapshot(tmp_path)
    result = dlr_cli("evaluate", str(model_dir), path, "--json")
    assert_one_line_cli_error(result, *words)
    assert result.stdout == ""
    assert snapshot(tmp_path) == before


def test_predict_failing_midway_leaves_no_partial_output_once_all_chunk_writes_end(
    tmp_path, model_dir
):
    # NaN in the first of 40 chunks: the error arrives while other chunks are being written.
    # Whether a write lands after the cleanup depends on timing, so try several times.
    X, y = good_arrays(n_samples=4000)
    X[0, 0] = np.nan
    path = write_dataset(tmp_path / "data.zarr", X, y, chunk=100)
    outs = [f"p{attempt}.zarr" for attempt in range(10)]
    for out in outs:
        result = dlr_cli("predict", str(model_dir), path, "--out", str(tmp_path / out))
        assert_one_line_cli_error(result, "chunk 0", "first at sample 0")
    time.sleep(0.5)  # any write still running after the command returned has landed by now
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".p", "p")))
    assert leftovers == []


def test_evaluate_on_labels_the_model_does_not_know_names_chunk_and_sample(tmp_path, model_dir):
    path = label_at(37, 2, np.uint8)(tmp_path / "data.zarr")
    result = dlr_cli("evaluate", str(model_dir), path)
    assert_one_line_cli_error(
        result, "chunk 1", "label 2 at sample 37", "does not know", "classes [0, 1]"
    )


def test_predict_with_a_model_of_another_feature_count_is_refused(tmp_path, model_dir):
    X, y = good_arrays(n_features=N_FEATURES + 1)
    path = write_dataset(tmp_path / "data.zarr", X, y)
    result = dlr_cli("predict", str(model_dir), path, "--out", str(tmp_path / "p.zarr"))
    assert_one_line_cli_error(result, f"{N_FEATURES + 1} features", f"fitted on {N_FEATURES}")
    assert_nothing_published(tmp_path, "p.zarr")


# --- refusing to overwrite ----------------------------------------------------------------------


def test_make_data_to_an_existing_path_without_overwrite_keeps_the_existing_data(tmp_path):
    path = str(tmp_path / "data.zarr")
    assert (
        dlr_cli(
            "make-data", path, "--samples", "300", "--features", "3", "--chunk-samples", "100"
        ).exit_code
        == 0
    )
    X_before = zarr.open_group(path, mode="r")["X"][:]
    before = snapshot(tmp_path)

    result = dlr_cli("make-data", path, "--samples", "500", "--features", "5", "--seed", "9")

    assert_one_line_cli_error(result, path, "exists", "--overwrite")
    assert snapshot(tmp_path) == before
    np.testing.assert_array_equal(zarr.open_group(path, mode="r")["X"][:], X_before)


def test_train_to_an_existing_model_without_overwrite_refuses_and_keeps_the_old_model(tmp_path):
    path = write_dataset(tmp_path / "data.zarr", *good_arrays())
    model = str(tmp_path / "model")
    first = dlr_cli(
        "train", path, "--model", model, "--solver", "gd", "--max-iter", "20", "--tol", "0"
    )
    assert first.exit_code == 0
    before = snapshot(tmp_path)
    meta_before = Path(model, "model.json").read_bytes()

    result = dlr_cli("train", path, "--model", model, "--max-iter", "3")

    assert_one_line_cli_error(result, model, "exists", "--overwrite")
    assert snapshot(tmp_path) == before
    assert Path(model, "model.json").read_bytes() == meta_before
    assert dlr.load(model).n_iter_ == 20


def test_saving_a_model_over_an_existing_one_without_overwrite_raises(tmp_path, model_dir):
    meta_before = (model_dir / "model.json").read_bytes()
    with pytest.raises(dlr.ModelError, match="exists"):
        dlr.load(str(model_dir)).save(str(model_dir), overwrite=False)
    assert (model_dir / "model.json").read_bytes() == meta_before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".model.")] == []


# --- damaged model files ------------------------------------------------------------------------


def damage_json(model: Path) -> str:
    (model / "model.json").write_text('{"format": "dlr-model", "coef": [1, 2')
    return "model.json"


def json_not_a_model(model: Path) -> str:
    (model / "model.json").write_text(json.dumps({"hello": "world"}))
    return "model.json"


def remove_coef(model: Path) -> str:
    (model / "coef.npy").unlink()
    return "coef.npy"


def remove_intercept(model: Path) -> str:
    (model / "intercept.npy").unlink()
    return "intercept.npy"


def remove_model_json(model: Path) -> str:
    (model / "model.json").unlink()
    return "model.json"


def truncate_coef(model: Path) -> str:
    data = (model / "coef.npy").read_bytes()
    (model / "coef.npy").write_bytes(data[: len(data) - 10])
    return "coef.npy"


def coef_of_wrong_shape(model: Path) -> str:
    """A coef.npy of the wrong shape whose checksum was updated too (a hand-edited model)."""
    np.save(model / "coef.npy", np.zeros((1, N_FEATURES + 2)))
    meta = json.loads((model / "model.json").read_text())
    digest = hashlib.sha256((model / "coef.npy").read_bytes()).hexdigest()
    meta["arrays"]["coef"]["sha256"] = digest
    (model / "model.json").write_text(json.dumps(meta))
    return "inconsistent"


def coef_changed_behind_the_checksum(model: Path) -> str:
    np.save(model / "coef.npy", np.ones((1, N_FEATURES)))
    return "coef.npy"


def future_format_version(model: Path) -> str:
    meta = json.loads((model / "model.json").read_text())
    meta["format_version"] = 99
    (model / "model.json").write_text(json.dumps(meta))
    return "format version 99"


DAMAGED_MODELS = [
    pytest.param(damage_json, ["not valid JSON"], id="model.json is not valid JSON"),
    pytest.param(json_not_a_model, ["not a dlr model file"], id="model.json is not a dlr model"),
    pytest.param(remove_model_json, ["no dlr model", "no model.json"], id="model.json missing"),
    pytest.param(remove_coef, ["cannot read"], id="coef.npy missing"),
    pytest.param(remove_intercept, ["cannot read"], id="intercept.npy missing"),
    pytest.param(truncate_coef, ["cannot read"], id="coef.npy truncated"),
    pytest.param(coef_of_wrong_shape, ["coef (1, 6)"], id="coef.npy of the wrong shape"),
    pytest.param(
        coef_changed_behind_the_checksum,
        ["does not match the checksum"],
        id="coef.npy not matching its checksum",
    ),
    pytest.param(future_format_version, ["this dlr reads version 1"], id="unknown format version"),
]


@pytest.mark.parametrize(("damage", "words"), DAMAGED_MODELS)
def test_loading_a_damaged_model_raises_a_model_error_naming_the_file(model_dir, damage, words):
    name = damage(model_dir)
    with pytest.raises(dlr.ModelError) as info:
        dlr.load(str(model_dir))
    assert_mentions(str(info.value), name, str(model_dir), *words)


@pytest.mark.parametrize(("damage", "words"), DAMAGED_MODELS)
def test_predict_with_a_damaged_model_fails_cleanly_and_writes_nothing(
    tmp_path, model_dir, damage, words
):
    name = damage(model_dir)
    path = write_dataset(tmp_path / "data.zarr", *good_arrays())
    result = dlr_cli("predict", str(model_dir), path, "--out", str(tmp_path / "p.zarr"))
    assert_one_line_cli_error(result, name, *words)
    assert_nothing_published(tmp_path, "p.zarr")


class _TouchOnUnpickle:
    """Unpickling this creates ``marker``: proof that loading a model ran pickled code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def object_coef(marker: Path) -> np.ndarray:
    payload = np.zeros((1, N_FEATURES), dtype=object)
    payload[0, 0] = _TouchOnUnpickle(str(marker))
    return payload


def test_a_model_holding_an_object_array_is_refused_without_unpickling(tmp_path, model_dir):
    # control: such a file does run code when pickles are allowed
    np.save(tmp_path / "control.npy", object_coef(tmp_path / "control"), allow_pickle=True)
    np.load(tmp_path / "control.npy", allow_pickle=True)
    assert (tmp_path / "control").exists()

    marker = tmp_path / "unpickled"
    np.save(model_dir / "coef.npy", object_coef(marker), allow_pickle=True)
    with pytest.raises(dlr.ModelError) as info:
        dlr.load(str(model_dir))
    assert_mentions(str(info.value), "coef.npy", "cannot read")
    assert not marker.exists()

    data = write_dataset(tmp_path / "d.zarr", *good_arrays())
    result = dlr_cli("evaluate", str(model_dir), data)
    assert_one_line_cli_error(result, "coef.npy")
    assert not marker.exists()


def test_a_column_vector_y_is_read_as_1d_with_a_warning():
    X, y = good_arrays()
    with pytest.warns(DataConversionWarning, match=r"column-vector y .* \(120, 1\)"):
        column = dlr.LogisticRegression().fit(X, y[:, None])
    np.testing.assert_array_equal(column.coef_, dlr.LogisticRegression().fit(X, y).coef_)
