"""`dlr ingest`: every format becomes the same content-named span, exactly once; bad batches
are refused naming file, column and row, with nothing committed; an ingest killed at any point
leaves nothing visible and its rerun completes it; a full disk is a clear error. Each span
keeps the summary of its rows (what drift needs), on drift edges fixed at the first ingest."""

import hashlib
import json
import os
import signal
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import zarr

from dlr import encode, spans, spansummary, summary, tables
from dlr.registry import Registry
from dlr.spans import holdout_mask, ingest
from dlr.summary import Edges, of_rows
from dlr.tables import declared_ranges
from tests.conftest import assert_matches
from tests.registry_support import (
    killed_at,
    ok,
    race_two_ingests,
    refused,
    small_tmpfs,
    spawn,
    table,
    tree,
)

ROWS = 2500


def write(kind: str, t: pa.Table, path) -> str:
    """``t`` written as ``kind``; returns the SOURCE to ingest."""
    path = str(path)
    if kind == "parquet":
        pq.write_table(t, f"{path}.parquet", row_group_size=700)
        return f"{path}.parquet"
    if kind == "parquet-directory":  # three files, several row groups each
        os.makedirs(path)
        bounds = [0, 900, 1700, t.num_rows]
        for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            pq.write_table(t.slice(s, e - s), f"{path}/part-{i}.parquet", row_group_size=300)
        with open(f"{path}/_SUCCESS", "w"):
            pass  # marker files of Spark and friends are skipped
        pq.write_table(t.slice(0, 10), f"{path}/.part-0.parquet.crc")  # and hidden ones
        pq.write_table(t.slice(0, 10), f"{path}/.unfinished.parquet")
        return path
    if kind == "csv":
        pa_csv.write_csv(t, f"{path}.csv")
        return f"{path}.csv"
    if kind == "csv.gz":
        with pa.CompressedOutputStream(f"{path}.csv.gz", "gzip") as out:
            pa_csv.write_csv(t, out)
        return f"{path}.csv.gz"
    columns = {name: t.column(name).to_numpy() for name in t.column_names}
    if kind == "npy":  # a structured array: one field per column
        dtype = [(name, c.dtype) for name, c in columns.items()]
        array = np.empty(t.num_rows, dtype=dtype)
        for name, c in columns.items():
            array[name] = c
        np.save(f"{path}.npy", array)
        return f"{path}.npy"
    if kind == "npz":
        np.savez(f"{path}.npz", **columns)
        return f"{path}.npz"
    raise AssertionError(kind)


def span_rows(registry: Registry, span_id: str):
    """All rows of a committed span (train then holdout) as (X, y)."""
    parts = [
        zarr.open_group(f"{registry.url}/{d}/{span_id}", mode="r") for d in ("spans", "holdout")
    ]
    X = np.concatenate([g["X"][:] for g in parts])
    y = np.concatenate([g["y"][:] for g in parts])
    return X, y


def committed_state(reg_path) -> dict:
    """Everything a reader can see: the commit files and the directories they name."""
    return {k: v for k, v in tree(reg_path).items() if not k.startswith("lease")}


def summary_files(reg) -> dict:
    return {k: v for k, v in tree(reg).items() if k.endswith("summary.json")}


@pytest.fixture
def small_blocks(monkeypatch):
    """Summaries over blocks of 100 rows (of 3 features), so a span has many of them."""
    monkeypatch.setattr(summary, "BLOCK_BYTES", 8 * 3 * 100)


@pytest.mark.parametrize("kind", ["parquet", "parquet-directory", "csv", "csv.gz", "npy", "npz"])
def test_every_format_becomes_the_same_content_named_span(kind, tmp_path, small_blocks):
    t = table(ROWS, seed=1)
    reference = tmp_path / "reference"
    ok("ingest", write("parquet", t, tmp_path / "ref"), "--registry", reference, "--label", "label")
    expected = Registry(str(reference)).spans()[0]

    reg = tmp_path / "reg"
    out = ok("ingest", write(kind, t, tmp_path / "batch"), "--registry", reg, "--label", "label")
    assert out.startswith(f"committed span {expected.id} from ")
    (span,) = Registry(str(reg)).spans()
    assert (span.id, span.rows, span.train_rows, span.holdout_rows) == (
        expected.id,
        ROWS,
        expected.train_rows,
        expected.holdout_rows,
    )
    X, y = span_rows(Registry(str(reg)), span.id)
    source = np.column_stack([t.column(c).to_numpy() for c in "abc"])
    order = np.lexsort(X.T[::-1])
    np.testing.assert_array_equal(X[order], source[np.lexsort(source.T[::-1])])
    assert y.sum() == t.column("label").to_numpy().sum()
    # and the same summaries, bit for bit, whatever the record batches were
    assert len(summary_files(reg)) == 2 and summary_files(reg) == summary_files(reference)


def test_the_summaries_are_the_same_bits_under_any_chunking(tmp_path, small_blocks):
    source = write("parquet", table(ROWS, seed=3), tmp_path / "day")
    for chunk in ("64", "1000", "2500"):
        ok("ingest", source, "--registry", tmp_path / chunk, "--label", "label",
           "--chunk-samples", chunk)  # fmt: skip
    assert len(summary_files(tmp_path / "64")) == 2
    assert summary_files(tmp_path / "64") == summary_files(tmp_path / "1000")
    assert summary_files(tmp_path / "64") == summary_files(tmp_path / "2500")


def test_each_span_keeps_the_summary_of_its_rows_on_the_edges_of_the_first_ingest(
    tmp_path, small_blocks, monkeypatch
):
    a, b = table(ROWS, seed=4), table(1000, seed=5)
    reg = tmp_path / "reg"
    first = [write("parquet", a, tmp_path / "a"), write("csv", b, tmp_path / "b")]
    ok("ingest", *first, "--registry", reg, "--label", "label", "--drift-bins", "7")
    registry = Registry(str(reg))
    # the edges: 7 bins over the range of every row of the first ingest (both sources)
    rows = np.concatenate(
        [np.column_stack([t.column(c).to_numpy() for c in "abc"]) for t in (a, b)]
    )
    assert registry.schema["drift"] == {
        "bins": 7,
        "min": rows.min(0).tolist(),
        "max": rows.max(0).tolist(),
    }
    edges = Edges.from_json(registry.schema["drift"])

    def assert_summaries_of_rows(span):
        for part, url in (("train", span.train_url), ("holdout", span.holdout_url)):
            group = zarr.open_group(url, mode="r")
            want = of_rows(group["X"][:], group["y"][:], edges)
            got = spansummary.load(registry, span.id, part, edges)
            assert (got.count, got.labels) == (want.count, want.labels)
            for field in ("min", "max", "hist"):
                np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
            assert_matches(got.mean, want.mean)
            assert_matches(got.m2, want.m2)

    for span in registry.spans():
        assert_summaries_of_rows(span)
    # a later ingest counts its histograms while it streams the batch: nothing is read back
    monkeypatch.setattr(spans, "histogram", None)  # what the first ingest reads back with
    wide = table(800, seed=6)
    wide = wide.set_column(0, "a", pa.array(wide.column("a").to_numpy() * 5))  # off the edges
    (later,) = ingest([write("parquet", wide, tmp_path / "c")], registry)
    assert_summaries_of_rows(registry.spans()[-1])
    assert registry.spans()[-1].id == later.id
    # the bins are the registry's
    err = refused(
        "ingest", write("npz", wide, tmp_path / "d"), "--registry", reg, "--drift-bins", 10
    )
    assert "--drift-bins 10 disagrees with the registry's schema (drift bins 7" in err


def test_a_first_ingest_of_parquet_counts_its_histograms_on_the_range_its_statistics_declare(
    tmp_path, small_blocks, monkeypatch
):
    t = table(ROWS, seed=7)
    # a feature whose minimum is a zero: Parquet writers declare it as -0.0
    a = np.abs(t.column("a").to_numpy())
    a[::2] = 0.0
    t = t.set_column(0, "a", pa.array(a))
    reference = tmp_path / "from-csv"  # no statistics: histograms counted by reading back
    ok("ingest", write("csv", t, tmp_path / "day"), "--registry", reference, "--label", "label")

    read_back = spans.histogram
    monkeypatch.setattr(spans, "histogram", None)  # what the first ingest reads back with
    parquet = tmp_path / "from-parquet"
    ok("ingest", write("parquet-directory", t, tmp_path / "dir"), "--registry", parquet,
       "--label", "label")  # fmt: skip
    assert Registry(str(parquet)).schema == Registry(str(reference)).schema
    assert summary_files(parquet) == summary_files(reference)

    # statistics that are not the rows' range (a wrong writer): the rows' range wins
    monkeypatch.setattr(spans, "histogram", read_back)
    monkeypatch.setattr(
        spans, "declared_ranges", lambda source, columns, options: [(-9.0, 9.0)] * len(columns)
    )
    wrong = tmp_path / "wrong-statistics"
    ok("ingest", write("parquet", t, tmp_path / "file"), "--registry", wrong, "--label", "label")
    assert Registry(str(wrong)).schema == Registry(str(reference)).schema
    assert summary_files(wrong) == summary_files(reference)


def test_parquet_declares_a_range_only_where_every_row_group_states_one(tmp_path):
    t = table(100, seed=8)
    a = t.column("a").to_numpy()
    path = str(tmp_path / "day.parquet")
    pq.write_table(t, path, row_group_size=30)
    assert declared_ranges(path, ["a"]) == [(a.min(), a.max())]
    pq.write_table(t, path, write_statistics=["a", "label"])
    assert declared_ranges(path, ["a"]) == [(a.min(), a.max())]
    assert declared_ranges(path, ["a", "b"]) is None
    pq.write_table(t, path, write_statistics=False)
    assert declared_ranges(path, ["a"]) is None
    pa_csv.write_csv(t, str(tmp_path / "day.csv"))
    assert declared_ranges(str(tmp_path / "day.csv"), ["a"]) is None


def test_a_zarr_dataset_is_ingested_chunk_by_chunk(tmp_path, dataset):
    data = dataset(n_samples=777, n_features=4, chunk_samples=100, samples_first=False)
    reg = tmp_path / "reg"
    ok("ingest", data, "--registry", reg, "--label", "y", "--chunk-samples", "64")
    registry = Registry(str(reg))
    (span,) = registry.spans()
    assert registry.schema["features"] == ["x0", "x1", "x2", "x3"]
    X, y = span_rows(registry, span.id)
    group = zarr.open_group(data, mode="r")
    original = np.column_stack([group["X"][:].T, group["y"][:]])
    got = np.column_stack([X, y])
    np.testing.assert_array_equal(
        got[np.lexsort(got.T[::-1])], original[np.lexsort(original.T[::-1])]
    )
    assert zarr.open_array(span.train_url + "/X", mode="r").chunks == (64, 4)


def test_the_sources_of_one_call_are_the_spans_each_makes_alone(tmp_path):
    """One call reuses its arrays from batch to batch and SOURCE to SOURCE: every span still
    holds exactly its own rows, in order, under the id its content alone gives it."""
    tables = [table(ROWS + 37 * k, seed=10 + k) for k in range(3)]
    sources = [write("parquet", t, tmp_path / f"day{k}") for k, t in enumerate(tables)]
    reg = tmp_path / "together"
    # batches and chunks of 64 rows: 40 and more batches a source, the arrays reused many times
    ok("ingest", *sources, "--registry", reg, "--label", "label", "--chunk-samples", "64")
    together = {s.source: s for s in Registry(str(reg)).spans()}
    for k, (t, source) in enumerate(zip(tables, sources, strict=True)):
        ok("ingest", source, "--registry", tmp_path / f"alone{k}", "--label", "label")
        (alone,) = Registry(str(tmp_path / f"alone{k}")).spans()
        span = together[source]
        assert span.id == alone.id
        X = np.column_stack([t.column(c).to_numpy() for c in "abc"])
        y = t.column("label").to_numpy()
        held = holdout_mask(X, y, None, 0.1)
        for url, rows in ((span.train_url, ~held), (span.holdout_url, held)):
            group = zarr.open_group(url, mode="r")
            np.testing.assert_array_equal(group["X"][:], X[rows])
            np.testing.assert_array_equal(group["y"][:], y[rows])


def test_every_chunk_file_is_flushed_while_the_ingest_goes_on(tmp_path, monkeypatch):
    """The chunks go to disk beside the work (the commit's fsync of the tree then finds little
    left to do): every chunk file of every span is fsynced before the commit."""
    flushed, committed = [], []
    fsync_quietly, commit = spans._fsync_quietly, spans._commit
    monkeypatch.setattr(spans, "_fsync_quietly", lambda paths: flushed.extend(paths) or
                        fsync_quietly(paths))  # fmt: skip
    monkeypatch.setattr(spans, "_commit", lambda *a: committed.append(len(flushed)) or commit(*a))
    t = table(ROWS, seed=8).append_column("weight", pa.array(np.ones(ROWS)))
    reg = tmp_path / "reg"
    ok("ingest", write("parquet", t, tmp_path / "day"), "--registry", reg, "--label", "label",
       "--sample-weight", "weight", "--chunk-samples", "100")  # fmt: skip
    (span,) = Registry(str(reg)).spans()

    def in_group(path: str) -> tuple:  # spans/<id or temporary name>/X/c/0/0 -> spans, X/c/0/0
        kind, _, *rest = os.path.relpath(path, reg).split(os.sep)
        return kind, os.path.join(*rest)

    chunk_files = {
        in_group(os.path.join(root, name))
        for url in (span.train_url, span.holdout_url)
        for root, _, names in os.walk(url)
        for name in names
        if f"{os.sep}c{os.sep}" in os.path.join(root, name)
    }
    assert len(chunk_files) == 3 * (-(-span.train_rows // 100) + -(-span.holdout_rows // 100))
    assert {in_group(p) for p in flushed} == chunk_files
    assert committed == [len(flushed)]  # all of them before the commit


def test_a_span_is_the_bytes_zarr_writes_for_it(tmp_path, monkeypatch):
    """dlr writes whole chunks of a local span itself (dlr.encode): every file of the span is
    the one zarr's own writes make — float32 features, weights, a ragged last chunk."""
    rng = np.random.default_rng(21)
    t = pa.table(
        {
            "a": rng.normal(size=ROWS).astype(np.float32),
            "b": rng.normal(size=ROWS).astype(np.float32),
            "label": rng.integers(0, 2, ROWS),
            "weight": rng.random(ROWS),
        }
    )
    source = write("parquet", t, tmp_path / "day")
    written, chunk_write = [], encode.ChunkWriter.write

    def counted(self, i, block):
        written.append(i)
        return chunk_write(self, i, block)

    monkeypatch.setattr(encode.ChunkWriter, "write", counted)
    options = ("--label", "label", "--sample-weight", "weight", "--chunk-samples", "100")
    ok("ingest", source, "--registry", tmp_path / "direct", *options)
    (direct,) = Registry(tmp_path / "direct").spans()
    assert sorted(written) == sorted(3 * [*range(direct.train_rows // 100),
                                          *range(direct.holdout_rows // 100)])  # fmt: skip
    monkeypatch.setattr(spans, "direct_writer", lambda arr, directory: None)
    ok("ingest", source, "--registry", tmp_path / "zarr", *options)
    (by_zarr,) = Registry(tmp_path / "zarr").spans()
    assert direct.id == by_zarr.id
    for a, b in ((direct.train_url, by_zarr.train_url), (direct.holdout_url, by_zarr.holdout_url)):
        assert tree(a) == tree(b)


def test_the_same_content_under_another_name_changes_nothing(tmp_path):
    t = table(ROWS, seed=2)
    reg = tmp_path / "reg"
    first = write("parquet", t, tmp_path / "day1")
    out = ok("ingest", first, "--registry", reg, "--label", "label")
    span_id = out.split()[2]
    before = committed_state(reg)
    again = write("csv", t, tmp_path / "renamed-copy")  # another name, another format
    out = ok("ingest", again, "--registry", reg)
    assert out == (
        f"span {span_id} from {again} is already committed (same content as {first}); "
        "nothing changed\n"
    )
    assert committed_state(reg) == before


def test_the_holdout_is_chosen_by_each_rows_content(tmp_path):
    t = table(20000, seed=3)
    X = np.column_stack([t.column(c).to_numpy() for c in "abc"])
    y = t.column("label").to_numpy()
    mask = holdout_mask(X, y, None, 0.1)
    assert 0.09 < mask.mean() < 0.11
    perm = np.random.default_rng(0).permutation(len(y))
    np.testing.assert_array_equal(holdout_mask(X[perm], y[perm], None, 0.1), mask[perm])
    np.testing.assert_array_equal(holdout_mask(X[:777], y[:777], None, 0.1), mask[:777])
    assert not holdout_mask(X, y, None, 0.0).any()


def test_the_holdout_split_is_the_one_earlier_versions_made():
    """The row hash is part of the format: a batch ingested again, or backfilled, must keep
    the holdout rows it had (the split of these rows, recorded when it was introduced)."""
    X = np.random.default_rng(7).normal(size=(1000, 4))
    y = np.arange(1000) % 2
    mask = holdout_mask(X, y, None, 0.3)
    assert mask.sum() == 313
    assert hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()[:16] == "8abd105703e7efbb"


def _variant(kind: str):
    """A second batch that breaks the schema, and the error it must produce."""
    t = table(ROWS, seed=4)
    if kind == "missing column":
        return t.drop_columns(["b"]), "column 'b' is missing"
    if kind == "extra column":
        return t.append_column("d", t.column("a")), "column 'd' is not in the registry's schema"
    if kind == "retyped column":
        return (
            t.set_column(1, "b", pa.array(np.arange(ROWS))),
            "column 'b' has type int64; the registry's schema has double",
        )
    a = t.column("a").to_numpy().copy()
    if kind == "non-integer label":
        labels = t.column("label").to_numpy().astype(np.float64)
        labels[1234] = 0.5
        t = t.set_column(3, "label", pa.array(labels))
        return t, "column 'label' has type double"  # a float label column is a retyped one
    if kind in ("NaN", "inf"):
        a[1234] = np.nan if kind == "NaN" else -np.inf
        return (
            t.set_column(0, "a", pa.array(a)),
            f"column 'a', row 1234: {a[1234]}; features must be finite",
        )
    if kind == "missing value":
        return (
            t.set_column(0, "a", pa.array(a, mask=np.arange(ROWS) == 1234)),
            "column 'a', row 1234: missing value",
        )
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "missing column",
        "extra column",
        "retyped column",
        "non-integer label",
        "NaN",
        "inf",
        "missing value",
    ],
)
def test_a_batch_that_breaks_the_schema_is_refused_and_nothing_is_committed(kind, tmp_path):
    reg = tmp_path / "reg"
    ok(
        "ingest",
        write("parquet", table(ROWS, seed=5), tmp_path / "day1"),
        "--registry",
        reg,
        "--label",
        "label",
    )
    before = committed_state(reg)
    good = write("parquet", table(ROWS, seed=6), tmp_path / "good")
    bad_table, message = _variant(kind)
    bad = write("parquet", bad_table, tmp_path / "bad")
    error = refused("ingest", good, bad, "--registry", reg)
    assert f"'{bad}'" in error and message in error, error
    assert committed_state(reg) == before  # not even the good batch of the same call
    assert len(Registry(str(reg)).spans()) == 1


@pytest.mark.parametrize("weight", [-0.5, np.nan])
def test_a_weight_that_is_negative_or_not_a_number_is_named_by_row(tmp_path, weight):
    t = table(ROWS, seed=16)
    weights = np.ones(ROWS)
    weights[777] = weight
    bad = write("parquet", t.append_column("w", pa.array(weights)), tmp_path / "day")
    error = refused("ingest", bad, "--registry", tmp_path / "reg", "--label", "label",
                    "--sample-weight", "w")  # fmt: skip
    assert (
        f"'{bad}', column 'w', row 777: sample weight {weight}; weights must be finite and ≥ 0"
        in error
    )
    assert Registry(str(tmp_path / "reg")).spans() == []


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (("--label", "c"), "--label c disagrees with the registry's schema (label 'label'"),
        (
            ("--sample-weight", "a"),
            "--sample-weight a disagrees with the registry's schema (sample_weight None",
        ),  # fmt: skip
        (
            ("--features", "b,a,c"),
            "--features b,a,c disagrees with the registry's schema (features a,b,c",
        ),  # fmt: skip
    ],
)
def test_a_later_ingest_cannot_change_the_schema_by_its_options(tmp_path, option, message):
    reg = tmp_path / "reg"
    ok("ingest", write("parquet", table(300, seed=17), tmp_path / "day1"), "--registry", reg,
       "--label", "label")  # fmt: skip
    day2 = write("parquet", table(300, seed=18), tmp_path / "day2")
    error = refused("ingest", day2, "--registry", reg, *option)
    assert message in error and "fixed at its first ingest" in error
    assert len(Registry(str(reg)).spans()) == 1


def test_a_csv_files_types_are_inferred_from_its_first_16_mib(tmp_path):
    """A column whose values look like integers for the first 2 MB of the file (beyond the
    1 MiB blocks it is streamed in) and then has a fraction is a float column."""
    rows = 120_000
    t = table(rows, seed=19)
    counts = np.arange(rows, dtype=np.float64) % 7
    counts[100_000] = 2.5  # about 6 MB into the file
    source = write("csv", t.set_column(0, "a", pa.array(counts)), tmp_path / "day")
    assert pa_csv.read_csv(source).schema.field("a").type == pa.float64()
    ok("ingest", source, "--registry", tmp_path / "reg", "--label", "label")
    registry = Registry(str(tmp_path / "reg"))
    assert registry.schema["dtypes"]["a"] == "double"
    X, _ = span_rows(registry, registry.spans()[0].id)
    assert sorted(np.unique(X[:, 0])) == [0, 1, 2, 2.5, 3, 4, 5, 6]


def test_a_non_integer_label_in_a_float_label_column_is_named_by_row(tmp_path):
    t = table(ROWS, seed=7)
    labels = t.column("label").to_numpy().astype(np.float64)
    labels[2100] = 0.5
    bad = write("csv", t.set_column(3, "label", pa.array(labels)), tmp_path / "day1")
    error = refused("ingest", bad, "--registry", tmp_path / "reg", "--label", "label")
    assert f"'{bad}', column 'label', row 2100: label 0.5 is not an integer class" in error
    assert Registry(str(tmp_path / "reg")).spans() == []


def test_a_csv_file_streams_in_whole_batches_that_name_the_row_of_a_bad_value(tmp_path):
    """A CSV file of several of the reader's 1 MiB blocks: batches of the rows asked for (the
    last one shorter), its types inferred from its first rows as pyarrow infers them, and a
    bad value named by its row in the file wherever it is."""
    rows = 60_000  # about 3.7 MB of text
    t = table(rows, seed=13)
    source = write("csv", t, tmp_path / "day")
    batches = list(tables.read_batches(source, 25_000))
    assert [(offset, b.num_rows) for _, offset, b in batches] == [
        (0, 25_000), (25_000, 25_000), (50_000, 10_000)
    ]  # fmt: skip
    assert pa.Table.from_batches([b for *_, b in batches]).equals(pa_csv.read_csv(source))
    a = t.column("a").to_numpy().copy()
    a[45_678] = np.inf
    bad = write("csv", t.set_column(0, "a", pa.array(a)), tmp_path / "bad")
    error = refused("ingest", bad, "--registry", tmp_path / "reg", "--label", "label")
    assert f"'{bad}', column 'a', row 45678: inf; features must be finite" in error


@pytest.mark.parametrize("layout", ["2-D", "structured", "big-endian", "fortran"])
def test_an_npy_file_is_read_in_batches_as_numpy_reads_it(tmp_path, layout):
    """np.save's C-order arrays are streamed from their header on (the rows of a batch at a
    time); a Fortran-order array is memory-mapped. Either way the columns are np.load's."""
    rng = np.random.default_rng(14)
    array = rng.normal(size=(50, 3))
    if layout in ("structured", "big-endian"):
        order = ">" if layout == "big-endian" else "<"
        array = np.zeros(50, dtype=[("a", f"{order}f8"), ("label", f"{order}i8")])
        array["a"], array["label"] = rng.normal(size=50), rng.integers(0, 2, 50)
    elif layout == "fortran":
        array = np.asfortranarray(array)
    np.save(tmp_path / "day.npy", array)
    batches = list(tables.read_batches(str(tmp_path / "day.npy"), 7))
    assert [offset for _, offset, _ in batches] == list(range(0, 50, 7))
    got = pa.Table.from_batches([b for *_, b in batches])
    names = array.dtype.names or [f"x{j}" for j in range(3)]
    for j, name in enumerate(names):
        expected = array[name] if array.dtype.names else array[:, j]
        np.testing.assert_array_equal(got.column(name).to_numpy(), expected)


def test_a_truncated_npy_file_is_named_with_the_rows_it_lacks(tmp_path):
    np.save(tmp_path / "day.npy", np.zeros((100, 4)))
    with open(tmp_path / "day.npy", "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / "day.npy") - 8 * 4 * 30 - 5)
    error = refused("ingest", tmp_path / "day.npy", "--registry", tmp_path / "reg", "--label", "x3")
    assert (
        f"'{tmp_path / 'day.npy'}' is truncated: its header says 100 rows, its data ends in row 69"
        in error
    )


def test_the_first_ingest_must_name_the_label(tmp_path):
    source = write("parquet", table(100, seed=8), tmp_path / "day1")
    error = refused("ingest", source, "--registry", tmp_path / "reg")
    assert "name the label column with --label (columns of" in error


INGEST = "from dlr.cli import main; main()"


def test_an_ingest_killed_before_its_commit_leaves_nothing_and_the_rerun_completes(tmp_path):
    """SIGKILL once the span is written — staged ("before-commit"), or already renamed to
    spans/<id> while the lease is held ("published") — but before spans.json names it: nothing
    visible; the rerun commits it once, taking over the dead process's lease when it expires."""
    stages = ("before-commit", "published")
    day1 = write("parquet", table(ROWS, seed=9), tmp_path / "day1")
    day2 = write("parquet", table(ROWS, seed=10), tmp_path / "day2")
    regs = {stage: tmp_path / stage for stage in stages}
    for reg in regs.values():
        ok("ingest", day1, "--registry", reg, "--label", "label")
    before = {stage: Registry(str(reg)).span_entries() for stage, reg in regs.items()}
    processes = {
        stage: spawn(INGEST, "ingest", day2, "--registry", reg, env={"DLR_TEST_PAUSE_AT": stage})
        for stage, reg in regs.items()
    }
    try:  # both run at once, to pay for starting Python once
        for stage, process in processes.items():
            assert process.stderr.readline() == f"dlr: paused at {stage}\n"
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
    finally:
        for process in processes.values():
            process.kill()
            process.communicate()
    for stage, reg in regs.items():
        registry = Registry(str(reg))
        assert registry.span_entries() == before[stage]  # nothing visible
        lease = json.loads((reg / "lease.json").read_text()) if stage == "published" else None
        if lease is not None:  # the dead holder's lease is left behind
            assert lease["owner"].endswith(f":{processes[stage].pid}")
        out = ok("ingest", day2, "--registry", reg)
        assert out.startswith("committed span ")
        if lease is not None:
            assert time.time() >= lease["expires"]  # the rerun waited for it to expire
        spans = registry.spans()
        assert len(spans) == 2 and len({s.id for s in spans}) == 2
        for part in ("spans", "holdout"):  # the dead process's temporaries are gone too
            assert sorted(os.listdir(reg / part)) == sorted(s.id for s in spans)
        assert "already committed" in ok("ingest", day2, "--registry", reg)


def test_a_first_ingest_killed_after_writing_the_schema_fixes_nothing(tmp_path):
    """The schema is written just before spans.json: killed in between, no span fixed it, so
    the next first ingest fixes its own (here another feature order), as if none had run."""
    day = write("parquet", table(ROWS, seed=15), tmp_path / "day")
    reg = tmp_path / "reg"
    killed_at("schema-fixed", "ingest", day, "--registry", reg, "--label", "label")
    registry = Registry(str(reg))
    assert registry.schema["features"] == ["a", "b", "c"] and registry.spans() == []
    out = ok("ingest", day, "--registry", reg, "--label", "label", "--features", "c,b,a")
    assert out.startswith("committed span ")
    assert registry.schema["features"] == ["c", "b", "a"] == registry.fixed_schema()["features"]
    error = refused("ingest", day, "--registry", reg, "--features", "a,b,c")
    assert "--features a,b,c disagrees with the registry's schema (features c,b,a" in error


def test_a_disk_full_at_the_commit_is_a_clear_error_and_the_rerun_completes(tmp_path):
    """The span is written and published; then the disk fills before spans.json is rewritten:
    a one-line error, spans.json as it was (no span visible), and once there is room again
    the rerun commits the span once."""
    day1 = write("parquet", table(ROWS, seed=22), tmp_path / "day1")
    day2 = write("parquet", table(ROWS, seed=23), tmp_path / "day2")
    with small_tmpfs(tmp_path / "small", "4m") as small:
        reg, resume = small / "reg", tmp_path / "resume"
        ok("ingest", day1, "--registry", reg, "--label", "label")
        before = Registry(str(reg)).span_entries()
        pause = {"DLR_TEST_PAUSE_AT": "published", "DLR_TEST_RESUME_FILE": str(resume)}
        process = spawn(INGEST, "ingest", day2, "--registry", reg, env=pause)
        try:
            assert process.stderr.readline() == "dlr: paused at published\n"
            with open(small / "filler", "wb") as filler:  # every byte left
                try:
                    while True:
                        filler.write(b"\0" * 65536)
                        filler.flush()
                except OSError:
                    pass
            resume.touch()
            _, err = process.communicate(timeout=60)
        finally:
            process.kill()
        assert process.returncode == 1
        assert err == (
            f"dlr: error: cannot commit to '{reg}': No space left on device; nothing was "
            "committed\n"
        )
        assert Registry(str(reg)).span_entries() == before
        os.remove(small / "filler")
        assert ok("ingest", day2, "--registry", reg).startswith("committed span ")
        spans = Registry(str(reg)).spans()
        assert len(spans) == 2 and len({s.id for s in spans}) == 2


def test_two_ingests_racing_on_one_registry_commit_both_spans(tmp_path):
    reg = str(tmp_path / "reg")
    day0 = write("parquet", table(300, seed=20), tmp_path / "day0")
    ok("ingest", day0, "--registry", reg, "--label", "label")
    days = [write("parquet", table(300, seed=21 + i), tmp_path / f"day{i + 1}") for i in (0, 1)]
    outcomes = race_two_ingests(reg, *days, tmp_path)
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    spans = Registry(reg).spans()
    assert len(spans) == 3 and sorted(s.source for s in spans[1:]) == sorted(days)


def test_a_full_disk_is_a_clear_error_and_nothing_is_committed(tmp_path):
    with small_tmpfs(tmp_path / "small", "2m") as small:
        reg = small / "reg"
        ok(
            "ingest",
            write("parquet", table(500, seed=11), tmp_path / "day1"),
            "--registry",
            reg,
            "--label",
            "label",
        )
        before = committed_state(reg)
        big = write("parquet", table(200_000, seed=12), tmp_path / "big")  # ~6 MB of floats
        error = refused("ingest", big, "--registry", reg)
        assert (
            f"cannot write the span of '{big}' into '{reg}': No space left on device; "
            "nothing was committed" in error
        )
        assert committed_state(reg) == before
        assert [n for n in os.listdir(reg / "spans") if n.startswith(".")] == []
