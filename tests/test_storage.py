"""Datasets on any fsspec filesystem: the same bits as from a local path."""

import numpy as np
import pytest

import dlr
from dlr import scoring
from dlr.dataset import open_dataset
from dlr.sources import from_dataset
from dlr.synthetic import make_dataset


@pytest.fixture
def memory_url():
    import fsspec

    url = "memory://dlr-tests/data.zarr"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists("/dlr-tests"):
        fs.rm("/dlr-tests", recursive=True)


def test_a_dataset_on_an_fsspec_filesystem_trains_like_the_local_copy(tmp_path, memory_url):
    local = str(tmp_path / "data.zarr")
    for url in (local, memory_url):
        make_dataset(url, 300, 4, chunk_samples=64, seed=5)
    params = {"learning_rate": 1.0, "max_iter": 20, "tol": 0}
    a = dlr.LogisticRegression(**params).fit(local)
    b = dlr.LogisticRegression(**params).fit(memory_url)
    c = dlr.LogisticRegression(**params).fit(f"file://{local}")
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.coef_, c.coef_)
    metrics = scoring.evaluate(from_dataset(open_dataset(memory_url)), b.theta_, b.classes_)
    assert metrics["n_samples"] == 300


def test_an_existing_remote_dataset_is_not_overwritten_by_default(memory_url):
    make_dataset(memory_url, 100, 2, chunk_samples=64, seed=1)
    with pytest.raises(dlr.DlrError, match="exists"):
        make_dataset(memory_url, 100, 2, chunk_samples=64, seed=2)
    assert open_dataset(memory_url).n_features == 2


def test_a_failed_remote_write_leaves_nothing_behind(memory_url, monkeypatch):
    import fsspec

    from dlr import synthetic

    def fail_at_second_chunk(start, *args):
        if start > 0:
            raise OSError("disk full")
        return original(start, *args)

    original = synthetic.make_chunk
    monkeypatch.setattr(synthetic, "make_chunk", fail_at_second_chunk)
    with pytest.raises(OSError, match="disk full"):
        make_dataset(memory_url, 200, 3, chunk_samples=64)
    assert not fsspec.filesystem("memory").exists("/dlr-tests/data.zarr")
