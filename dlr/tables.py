"""Reading batches of new data as a stream of record batches: Parquet, CSV, .npy, .npz, zarr.

Every reader yields ``(file, first_row, batch)``: the file the rows come from, the index of the
batch's first row in that file (0-based, not counting a CSV header), and a
``pyarrow.RecordBatch``. Parquet and CSV are streamed (``ParquetFile.iter_batches``,
``pyarrow.csv.open_csv``), so is a C-order ``.npy`` (its rows read a batch at a time) and zarr
is read chunk by chunk, so a file larger than memory is fine; an ``.npz`` archive is read
whole. A source is a file, a directory of such files (read in sorted order, hidden and ``_``
files skipped), or a zarr group; local paths or fsspec URLs.

Columns of a 2-D array (``X`` of an .npz or a zarr group, a plain 2-D .npy) are named
``x0, x1, ...``; 1-D arrays and the fields of a structured .npy keep their own names.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from dlr.atomic import is_local, local_path
from dlr.errors import DataError

PARQUET = (".parquet", ".pq")
CSV = (".csv", ".csv.gz", ".csv.bz2", ".tsv")
NUMPY = (".npy", ".npz")

Batches = Iterator[tuple[str, int, pa.RecordBatch]]

#: How a local Parquet file is streamed: pyarrow's default ``pre_buffer=True`` caches the stored
#: bytes of every row group it is asked for, so iterating over a whole file held all of it (a
#: 213 MB file peaked at 250 MB of Arrow memory); without it, and reading each column chunk
#: through a 1 MiB buffer instead of whole, memory is bounded by the batch, not by the file or
#: its row groups (61 MB for the same file, two row groups of up to 1M rows), and local reads
#: are no slower.
PARQUET_STREAMING = {"pre_buffer": False, "buffer_size": 1 << 20}

#: The bytes of a CSV file its column types are inferred from (its first block, as before).
CSV_INFERENCE_BYTES = 16 << 20
#: The blocks a CSV file is streamed in (pyarrow queues up to 32 of them ahead).
CSV_BLOCK_BYTES = 1 << 20


def read_batches(source: str, batch_rows: int, storage_options: dict | None = None) -> Batches:
    """Every record batch of ``source`` (see the module docstring), in order."""
    fs, files = _listing(source, storage_options)
    if files is None:
        yield from _zarr(source, batch_rows, storage_options)
        return
    for path, name in files:
        yield from _file(fs, path, name, batch_rows)


def declared_ranges(
    source: str, columns: list[str], storage_options: dict | None = None
) -> list[tuple[float, float]] | None:
    """Per column of ``columns``, the (min, max) that the Parquet statistics of every row group
    of ``source`` declare, as float64; None if ``source`` is not Parquet or any row group
    declares no min and max of a numeric column. Only the files' footers are read.

    A declaration, not a proof: a caller that relies on it checks it against the rows."""
    fs, files = _listing(source, storage_options)
    if files is None or any(_kind(path) != "parquet" for path, _ in files):
        return None
    lo, hi = [np.inf] * len(columns), [-np.inf] * len(columns)
    for path, name in files:
        try:
            with nullcontext(path) if is_local(name) else fs.open(path, "rb") as f:
                meta = pq.ParquetFile(f).metadata
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"cannot read '{name}': {e}") from None
        where = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
        if any(c not in where for c in columns):
            return None  # the batches will say which column is missing
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            if group.num_rows == 0:
                continue
            for j, c in enumerate(columns):
                stats = group.column(where[c]).statistics
                if stats is None or not stats.has_min_max:
                    return None
                if not all(isinstance(v, (int, float)) for v in (stats.min, stats.max)):
                    return None
                lo[j], hi[j] = min(lo[j], float(stats.min)), max(hi[j], float(stats.max))
    return list(zip(lo, hi, strict=True))


def _listing(source: str, storage_options: dict | None):
    """``(fs, [(path, name)])``: the data files of ``source`` in reading order, each with the
    name errors give it; ``(fs, None)`` for a zarr group."""
    if is_local(source):
        fs, path = fsspec.filesystem("file"), os.path.abspath(local_path(source))
    else:
        fs, path = fsspec.core.url_to_fs(source, **(storage_options or {}))
    if not fs.exists(path):
        raise DataError(f"'{source}' does not exist")
    if not fs.isdir(path):
        return fs, [(path, source)]
    if fs.exists(f"{path}/zarr.json"):
        return fs, None
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return fs, [
        (file, file if is_local(source) else f"{protocol}://{file}")
        for file in _data_files(fs, path, source)
    ]


def _data_files(fs, path: str, source: str) -> list[str]:
    files = sorted(
        f
        for f in fs.find(path)
        if not any(p.startswith((".", "_")) for p in f[len(path) :].split("/") if p)
    )
    kinds = {_kind(f) for f in files} - {None}
    data = [f for f in files if _kind(f) is not None]
    if not data:
        raise DataError(f"directory '{source}' holds no Parquet, CSV, .npy or .npz files")
    if len(kinds) > 1:
        raise DataError(
            f"directory '{source}' mixes file kinds ({', '.join(sorted(kinds))}); a batch is "
            "one kind of file"
        )
    return data


def _kind(name: str) -> str | None:
    lower = name.lower()
    for kind, suffixes in (("parquet", PARQUET), ("csv", CSV), ("numpy", NUMPY)):
        if lower.endswith(suffixes):
            return kind
    return None


def _file(fs, path: str, name: str, batch_rows: int) -> Batches:
    kind = _kind(path)
    if kind is None:
        raise DataError(
            f"'{name}': unknown kind of file; dlr ingests Parquet (.parquet), CSV (.csv), "
            ".npy, .npz and zarr groups"
        )
    try:
        if kind == "parquet":
            offset = 0
            for batch in _parquet(fs, path, is_local(name), batch_rows):
                yield name, offset, batch
                offset += batch.num_rows
        elif kind == "csv":
            yield from _csv(fs, path, name, batch_rows)
        elif path.lower().endswith(".npy"):
            yield from _npy(fs, path, name, batch_rows)
        else:
            with fs.open(path, "rb") as f:
                with np.load(f, allow_pickle=False) as archive:
                    columns = _columns(dict(archive.items()), name)
            yield from _slices(columns, name, batch_rows)
    except (pa.ArrowException, OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"cannot read '{name}': {e}") from None


def _parquet(fs, path: str, local: bool, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The record batches of a Parquet file. A local path goes to pyarrow itself (its native
    reads, not a Python file object's), streamed as :data:`PARQUET_STREAMING` says. A remote
    file keeps pyarrow's pre-buffering, which reads each row group's column chunks in a few
    large requests instead of one per buffer, and is asked for one row group at a time, so
    the bytes it holds are one row group's."""
    if local:
        yield from pq.ParquetFile(path, **PARQUET_STREAMING).iter_batches(batch_size=batch_rows)
        return
    with fs.open(path, "rb") as f:
        parquet = pq.ParquetFile(f)
        for group in range(parquet.num_row_groups):
            yield from parquet.iter_batches(batch_size=batch_rows, row_groups=[group])


def _csv(fs, path: str, name: str, batch_rows: int) -> Batches:
    """A CSV file in batches of ``batch_rows`` rows, its column types inferred from the whole
    rows of its first :data:`CSV_INFERENCE_BYTES` (read once more for that, as pyarrow's
    streaming reader infers them from its first block). That reader queues up to 32 blocks
    read ahead of the batches it has given out — with blocks of that size a file of a few
    hundred MB was read whole into memory —, so the file is streamed in blocks of
    :data:`CSV_BLOCK_BYTES`, with the inferred types, and the rows gathered into batches again
    here: memory is bounded by the batch, not by the file."""
    parse = pa_csv.ParseOptions(delimiter="\t" if path.lower().endswith(".tsv") else ",")
    with _csv_stream(fs, path) as stream:
        head = stream.read(CSV_INFERENCE_BYTES)
    if len(head) == CSV_INFERENCE_BYTES:
        head = head[: head.rfind(b"\n") + 1]  # whole rows (a value holds no newline)
    inferred = pa_csv.read_csv(
        pa.BufferReader(head),
        read_options=pa_csv.ReadOptions(block_size=max(1, len(head)), use_threads=False),
        parse_options=parse,
    )
    with _csv_stream(fs, path) as stream:
        reader = pa_csv.open_csv(
            stream,
            read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            parse_options=parse,
            convert_options=pa_csv.ConvertOptions(column_types=inferred.schema),
        )
        offset, parts, rows = 0, [], 0
        for block in reader:
            parts.append(block)
            rows += block.num_rows
            while rows >= batch_rows:
                joined = _joined(parts)
                yield name, offset, joined.slice(0, batch_rows)
                parts, rows = [joined.slice(batch_rows)], rows - batch_rows
                offset += batch_rows
        if rows:
            yield name, offset, _joined(parts)


@contextmanager
def _csv_stream(fs, path: str):
    """The CSV file at ``path``, decompressed if its name says gzip or bz2."""
    with fs.open(path, "rb") as raw:
        if path.lower().endswith(".gz"):
            yield pa.CompressedInputStream(raw, "gzip")
        elif path.lower().endswith(".bz2"):
            yield pa.CompressedInputStream(raw, "bz2")
        else:
            yield raw


def _joined(parts: list) -> pa.RecordBatch:
    """The record batches ``parts`` (of one schema) as one, each column in one buffer."""
    parts = [p for p in parts if p.num_rows]
    if len(parts) == 1:
        return parts[0]
    return pa.Table.from_batches(parts).combine_chunks().to_batches()[0]


def _npy(fs, path: str, name: str, batch_rows: int) -> Batches:
    """An .npy file in batches of ``batch_rows`` rows: a 2-D array (columns x0, x1, ...) or a
    structured one (a column per field). A C-order array (``np.save``'s) is streamed: its
    header read, then its rows, ``batch_rows`` at a time, so memory is bounded by the batch
    on local disk and object storage alike; a Fortran-order one is memory-mapped (local) or
    read whole (remote)."""
    with fs.open(path, "rb") as f:
        header = _npy_header(f, name)
        if header is not None and not (header[1] and len(header[0]) > 1):
            shape, _, dtype = header
            _npy_columns(np.empty((0, *shape[1:]) if shape else (), dtype), name)  # its errors
            row = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
            for start in range(0, shape[0], batch_rows):
                k = min(batch_rows, shape[0] - start)
                raw = f.read(k * row)
                if len(raw) != k * row:
                    raise DataError(
                        f"'{name}' is truncated: its header says {shape[0]} rows, its data ends "
                        f"in row {start + len(raw) // row}"
                    )
                block = np.frombuffer(raw, dtype=dtype).reshape(k, *shape[1:])
                for _, offset, batch in _slices(_npy_columns(block, name), name, batch_rows):
                    yield name, start + offset, batch
            return
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    else:
        with fs.open(path, "rb") as f:
            array = np.load(f, allow_pickle=False)
    yield from _slices(_npy_columns(array, name), name, batch_rows)


#: The .npy header readers NumPy makes public, by format version (3.0 differs only in allowing
#: UTF-8 field names: such a file is read by ``np.load``).
_NPY_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _npy_header(f, name: str) -> tuple | None:
    """(shape, fortran_order, dtype) of the .npy file ``f`` (left at its data), or None for a
    format version without a public header reader."""
    read = _NPY_HEADERS.get(np.lib.format.read_magic(f))
    if read is None:
        f.seek(0)
        return None
    shape, fortran, dtype = read(f)
    if dtype.hasobject:
        raise DataError(f"'{name}' holds Python objects; dlr reads numbers only (no pickles)")
    return shape, fortran, dtype


def _npy_columns(array: np.ndarray, name: str) -> dict:
    """The named columns of an .npy array: its fields, or x0, x1, ... of a 2-D array."""
    if array.dtype.names:
        return {field: array[field] for field in array.dtype.names}
    if array.ndim == 2:
        return {f"x{j}": array[:, j] for j in range(array.shape[1])}
    raise DataError(
        f"'{name}' holds a {array.ndim}-D array; an .npy batch is a 2-D array (columns "
        "x0, x1, ...) or a structured array (one field per column)"
    )


def _columns(arrays: dict, name: str) -> dict:
    """Named 1-D columns of an .npz archive or zarr group: ``X`` splits into x0, x1, ..."""
    columns = {}
    for key, a in arrays.items():
        if key == "X" and a.ndim == 2:
            columns.update({f"x{j}": a[:, j] for j in range(a.shape[1])})
        elif a.ndim == 1:
            columns[key] = a
        else:
            raise DataError(f"'{name}': array '{key}' has shape {a.shape}; expected 1-D columns")
    return columns


def _slices(columns: dict, name: str, batch_rows: int) -> Batches:
    lengths = {len(c) for c in columns.values()}
    if len(lengths) > 1:
        raise DataError(f"'{name}': its arrays have different lengths {sorted(lengths)}")
    m = lengths.pop() if lengths else 0
    for start in range(0, m, batch_rows):
        stop = min(start + batch_rows, m)
        arrays = [pa.array(_native(c[start:stop])) for c in columns.values()]
        yield name, start, pa.RecordBatch.from_arrays(arrays, names=list(columns))


def _native(column: np.ndarray) -> np.ndarray:
    """``column`` contiguous and in this machine's byte order (what pyarrow takes)."""
    return np.ascontiguousarray(column, dtype=column.dtype.newbyteorder("="))


def _zarr(source: str, batch_rows: int, storage_options: dict | None) -> Batches:
    """A zarr group: its 2-D ``X`` (a dlr dataset's, either layout) and 1-D arrays, chunk by
    chunk."""
    import zarr

    from dlr.dataset import open_dataset
    from dlr.decode import read_block

    ds = open_dataset(source, y=None, storage_options=storage_options)
    group = zarr.open_group(
        source, mode="r", storage_options=None if is_local(source) else storage_options
    )
    others = {k: a for k, a in group.arrays() if k != ds.x.path.rsplit("/", 1)[-1]}
    for key, a in others.items():
        if a.ndim != 1 or a.shape[0] != ds.n_samples:
            raise DataError(
                f"'{source}': array '{key}' has shape {a.shape}; expected ({ds.n_samples},)"
            )
    for i, (start, stop) in enumerate(ds.bounds):
        where = f"'{source}'"
        x = read_block(
            ds.x, ds.samples_first, start, stop, where, i, False, ds.decoders[0], ds.packings[0]
        )
        x = x if ds.samples_first else x.T
        columns = {f"x{j}": x[:, j] for j in range(x.shape[1])}
        columns.update({k: a[start:stop] for k, a in others.items()})
        for _, offset, batch in _slices(columns, source, batch_rows):
            yield source, start + offset, batch
