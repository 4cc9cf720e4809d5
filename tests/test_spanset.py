"""The training set of a registry is its committed spans read in place: training on them is
bit-identical to training on the same rows in one group; windows, backfills and exclusions pick
which spans take part."""

from datetime import timedelta

import dask.array as da
import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

import dlr
from dlr.dataset import create_arrays
from dlr.registry import Registry
from dlr.spans import holdout_mask, ingest
from dlr.spanset import holdout_source, training_source, window
from tests.registry_support import table

SOLVERS = [
    {"solver": "gd", "C": np.inf, "learning_rate": 1.0, "max_iter": 8, "tol": 0},
    {"solver": "lbfgs", "max_iter": 30},
]


def make_registry(tmp_path, sizes, chunk, holdout_fraction=0.0):
    """A registry with one span per entry of ``sizes`` (rows), ingested in that order."""
    registry = Registry.create_or_open(str(tmp_path / "reg"))
    for i, m in enumerate(sizes):
        path = tmp_path / f"day{i}.parquet"
        pq.write_table(table(m, seed=100 + i), path, row_group_size=77)
        ingest(
            [str(path)],
            registry,
            label="label",
            chunk_samples=chunk,
            holdout_fraction=holdout_fraction,
        )
    return registry


def concatenated(registry, spans, part="train"):
    """The spans' rows, copied together in memory: X (m, 3) and y (m,)."""
    groups = [
        zarr.open_group(s.train_url if part == "train" else s.holdout_url, mode="r") for s in spans
    ]
    return np.concatenate([g["X"][:] for g in groups]), np.concatenate([g["y"][:] for g in groups])


@pytest.mark.parametrize("params", SOLVERS, ids=lambda p: p["solver"])
def test_training_on_the_spans_is_bit_identical_to_one_group(params, tmp_path):
    chunk = 100
    registry = make_registry(tmp_path, [400, 300, 600], chunk)
    source = training_source(registry, registry.spans())
    assert source.n_chunks == 13 and source.n_samples == 1300
    X, y = concatenated(registry, registry.spans())
    group = zarr.open_group(str(tmp_path / "one.zarr"), mode="w")
    xa, ya = create_arrays(group, len(y), 3, chunk, dtype="float64")
    xa[:], ya[:] = X, y
    on_spans = dlr.LogisticRegression(**params).fit(source)
    on_group = dlr.LogisticRegression(**params).fit(str(tmp_path / "one.zarr"))
    np.testing.assert_array_equal(on_spans.coef_, on_group.coef_)
    np.testing.assert_array_equal(on_spans.intercept_, on_group.intercept_)
    np.testing.assert_array_equal(on_spans.loss_history_, on_group.loss_history_)


def test_spans_of_any_size_train_like_the_same_chunks_of_one_array(tmp_path):
    """Span ends need not fall on chunk boundaries: each span keeps its own last chunk."""
    registry = make_registry(tmp_path, [250, 130, 333], 100, holdout_fraction=0.1)
    spans = registry.spans()
    source = training_source(registry, spans)
    X, y = concatenated(registry, spans)
    sizes = tuple(e - s for s, e in source.bounds)
    assert sum(sizes) == len(y)
    assert len(sizes) == sum(-(-s.train_rows // 100) for s in spans)  # each span's last chunk
    dask_X, dask_y = da.from_array(X, chunks=(sizes, 3)), da.from_array(y, chunks=(sizes,))
    params = SOLVERS[1]
    on_spans = dlr.LogisticRegression(**params).fit(source)
    on_array = dlr.LogisticRegression(**params).fit(dask_X, dask_y)
    np.testing.assert_array_equal(on_spans.coef_, on_array.coef_)
    np.testing.assert_array_equal(on_spans.loss_history_, on_array.loss_history_)


def test_the_fresh_holdout_is_every_row_the_hash_holds_out_and_nothing_else(tmp_path):
    registry = make_registry(tmp_path, [700, 900], 128, holdout_fraction=0.2)
    spans = registry.spans()
    held = holdout_source(registry, spans)
    train = training_source(registry, spans)
    assert held.n_samples + train.n_samples == 1600
    assert held.n_samples == sum(s.holdout_rows for s in spans)
    X, y = concatenated(registry, spans, "holdout")
    assert holdout_mask(X, y, None, 0.2).all()
    X, y = concatenated(registry, spans, "train")
    assert not holdout_mask(X, y, None, 0.2).any()


def test_a_window_of_spans_by_count_or_by_age(tmp_path):
    registry = make_registry(tmp_path, [200, 200, 200, 200], 64)

    def committed_long_ago(entries):
        entries[0]["committed_at"] = "2026-01-01T00:00:00.000000Z"
        entries[1]["committed_at"] = "2026-01-02T00:00:00.000000Z"
        return entries

    registry.update_span_entries(committed_long_ago)
    spans = registry.spans()
    assert window(spans, last=2) == spans[2:]
    assert window(spans, within=timedelta(days=1)) == spans[2:]
    assert window(spans, within=timedelta(days=1), last=1) == spans[3:]
    assert window(spans) == spans
    source = training_source(registry, window(spans, last=2))
    assert source.n_samples == 400 and source.fingerprint["spans"] == [s.id for s in spans[2:]]


def test_a_backfilled_older_batch_joins_the_training_set_in_commit_order(tmp_path):
    registry = make_registry(tmp_path, [300, 300], 100)
    late = tmp_path / "day-before.parquet"  # an older day, arriving after the others
    pq.write_table(table(300, seed=7), late)
    (result,) = ingest([str(late)], registry, label="label", chunk_samples=100, holdout_fraction=0)
    assert result.created
    spans = registry.spans()
    assert [s.id for s in spans][-1] == result.id
    assert window(spans, last=1)[0].source == str(late)
    assert training_source(registry, spans).n_samples == 900


def test_an_excluded_span_is_left_out_of_every_later_training_set(tmp_path):
    registry = make_registry(tmp_path, [300, 200, 250], 100)
    bad = registry.spans()[1]
    registry.exclude_span(bad.id, "shuffled labels", by="test")
    spans = registry.spans()
    assert bad.id not in [s.id for s in spans]
    assert training_source(registry, spans).n_samples == 550
    assert [s.id for s in registry.spans(include_excluded=True) if s.excluded] == [bad.id]
    registry.include_span(bad.id[:8], "fixed upstream", by="test")
    assert training_source(registry, registry.spans()).n_samples == 750
    events = [(e["event"], e["span"], e["reason"]) for e in registry.history() if "span" in e]
    assert events == [
        ("exclude", bad.id, "shuffled labels"),
        ("include", bad.id, "fixed upstream"),
    ]
