"""Opening and validating a dataset in zarr: the one module that knows groups, arrays,
dimension names and chunk grids, and how dlr writes its own datasets.

A dataset is a zarr group (v2 or v3; written by dlr, zarr, dask, xarray, ...) holding

- a feature array (``X`` by default): (m, n) samples × features, or (n, m) features × samples —
  decided by its dimension names (see :func:`layout_of`); the sample axis's chunks (shards,
  when sharded) are the chunks dlr reads and caches;
- optionally a label array (``y``) and a sample-weight array: (m,), chunked in any way (they
  are read by sample range). Labels are any integer or float class labels (two classes: binary
  model; more: multinomial).

Absent chunks read as the array's fill value, as zarr defines them, except in arrays recording
that every chunk is stored (:data:`ALL_CHUNKS_STORED`; everything dlr writes), where a missing
chunk is an error naming it. ``url`` is a local path or any fsspec URL (``s3://...``), with
``storage_options`` passed through to fsspec.
"""

import math
from dataclasses import dataclass

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec
from zarr.core.sync import sync

from dlr.atomic import is_local
from dlr.cf import Packing, packing_of
from dlr.decode import DirectDecoder, direct_decoder, stored_dims
from dlr.errors import DataError

SAMPLES_FIRST = ("sample", "feature")
FEATURES_FIRST = ("feature", "sample")
LAYOUTS = {"samples-first": SAMPLES_FIRST, "features-first": FEATURES_FIRST}

#: The array attribute (under "dlr") recording that every chunk is stored, so that an absent
#: chunk is data lost, not fill values.
ALL_CHUNKS_STORED = "all_chunks_stored"


@dataclass(frozen=True)
class Column:
    """A validated zarr array of the dataset, how its chunks are decoded (None: by zarr), and
    its CF packing (None: values as stored; see :mod:`dlr.cf`)."""

    arr: zarr.Array
    decoder: DirectDecoder | None
    packing: Packing | None = None


@dataclass(frozen=True)
class Dataset:
    """An opened, validated dataset.

    ``x``, ``y`` and ``s`` (sample weights) are zarr arrays (``y`` and ``s`` may be None);
    ``bounds[i]`` is the (start, stop) sample range of chunk i, from ``x``'s chunk grid;
    ``decoders`` holds the direct decoder (or None) of ``x``, ``y`` and ``s``, ``packings``
    their CF packing (or None; see :mod:`dlr.cf`).
    """

    url: str
    x: zarr.Array
    y: zarr.Array | None
    samples_first: bool
    s: zarr.Array | None
    bounds: tuple
    decoders: tuple
    packings: tuple = (None, None, None)

    @property
    def n_samples(self) -> int:
        return self.x.shape[0 if self.samples_first else 1]

    @property
    def n_features(self) -> int:
        return self.x.shape[1 if self.samples_first else 0]

    @property
    def chunk_samples(self) -> int:
        return self.bounds[0][1] - self.bounds[0][0]

    @property
    def n_chunks(self) -> int:
        return len(self.bounds)

    def fingerprint(self) -> dict:
        """What identifies the data a model was trained on (recorded in model files)."""
        return {
            "url": self.url,
            "x": self.x.path,
            "y": self.y.path if self.y is not None else None,
            "sample_weight": self.s.path if self.s is not None else None,
            "layout": "samples-first" if self.samples_first else "features-first",
            "shape": [self.n_samples, self.n_features],
            "chunk_samples": self.chunk_samples,
            "dtype": str(self.x.dtype),
        }


def open_dataset(
    url: str,
    *,
    x: str = "X",
    y: str | None = "y",
    sample_weight: str | None = None,
    storage_options: dict | None = None,
) -> Dataset:
    """Open and validate a dataset; ``y=None`` opens features only (for prediction), and
    ``sample_weight`` names an optional array of per-sample weights shaped like ``y``.

    Raises :class:`DataError` naming the problem: missing group or array, a path to an array
    instead of a group, wrong dtype, empty shape, X/y mismatch, or chunks missing from an array
    that records every chunk stored.
    """
    group = _open_group(url, storage_options)
    dlr_group = _dlr_attrs(group).get("format") == "dlr-dataset"  # written before the attribute
    members = [_open_member(group, url, name) if name else None for name in (x, y, sample_weight)]
    return dataset_of(url, *members, stored=dlr_group)


def dataset_of(
    url: str,
    xa: zarr.Array,
    ya: zarr.Array | None = None,
    sa: zarr.Array | None = None,
    *,
    stored: bool = False,
) -> Dataset:
    """Validate zarr arrays as a dataset: ``xa`` the features, ``ya`` labels and ``sa`` sample
    weights (each optional). ``stored``: treat every array as recording all chunks stored."""

    def where(arr):
        return (
            f"{url}/{arr.path}" if arr.store_path.store == xa.store_path.store else arr.store_path
        )

    samples_first = layout_of(xa, where(xa), ya)
    columns = [check_features(xa, samples_first, where(xa), stored)]
    m = xa.shape[0 if samples_first else 1]
    for arr, name in ((ya, "y"), (sa, "sample weights")):
        columns.append(
            check_per_sample(arr, m, where(arr), name, stored) if arr is not None else None
        )
    grid = chunk_grid(xa)
    return Dataset(
        url,
        xa,
        ya,
        samples_first,
        sa,
        regular_bounds(m, grid[0 if samples_first else 1]),
        tuple(c.decoder if c is not None else None for c in columns),
        tuple(c.packing if c is not None else None for c in columns),
    )


def _open_group(url: str, storage_options: dict | None) -> zarr.Group:
    # storage options are for object stores; zarr refuses them with a local path
    options = None if is_local(url) else storage_options
    try:
        return zarr.open_group(url, mode="r", storage_options=options)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        raise DataError(f"no zarr group at '{url}' (expected a dlr dataset)") from None
    except zarr.errors.ContainsArrayError:
        raise DataError(
            f"'{url}' is a zarr array, not a group: pass the group holding the features and "
            "labels, and name them with --x/--y"
        ) from None


def _open_member(group: zarr.Group, url: str, name: str) -> zarr.Array:
    try:
        node = group[name]
    except KeyError:
        have = ", ".join(sorted(group.array_keys())) or "none"
        raise DataError(f"'{url}' has no array '{name}' (arrays: {have})") from None
    if not isinstance(node, zarr.Array):
        raise DataError(f"'{url}/{name}' is a group, not an array")
    return node


def _dlr_attrs(node) -> dict:
    meta = node.attrs.get("dlr")
    return meta if isinstance(meta, dict) else {}


def chunk_grid(arr: zarr.Array) -> tuple:
    """The chunk shape dlr reads by: the shard shape when sharded, else the chunk shape."""
    return getattr(arr, "shards", None) or arr.chunks


def regular_bounds(m: int, c: int) -> tuple:
    """(start, stop) of every chunk of ``c`` samples (the last may be shorter) of ``m``."""
    return tuple((s, min(s + c, m)) for s in range(0, m, c))


def layout_of(xa: zarr.Array, where: str, ya: zarr.Array | None = None) -> bool:
    """True if ``xa`` is samples × features, False if features × samples.

    From X's dimension names (``dimension_names`` in zarr v3, xarray's ``_ARRAY_DIMENSIONS``
    in v2): ("sample", "feature") or ("feature", "sample"); else the dimension that labels
    ``ya`` share with X, or the one named "sample" (or not named "feature"), is the sample axis;
    without any of these, X is samples × features.
    """
    if xa.ndim != 2:
        raise DataError(not_2d_message(f"X '{where}'", xa.shape))
    names = stored_dims(xa)
    if len(names) != 2 or names[0] == names[1]:
        return True
    shared = stored_dims(ya) if ya is not None and ya.ndim == 1 else ()
    for axis_names in (shared, ("sample",)):
        if axis_names and axis_names[0] in names:
            return names.index(axis_names[0]) == 0
    return names[0] != "feature"


def check_dtype(dtype: np.dtype, what: str, kinds: str = "iuf") -> None:
    if dtype.kind == "c":
        raise DataError(f"Complex data not supported: {what} has dtype {dtype}")
    if dtype.kind not in kinds:
        raise DataError(f"{what} has dtype {dtype}; expected real numbers (integer or float)")


def check_not_empty(m: int, n: int, what: str) -> None:
    """Samples and features must both be at least 1 (scikit-learn's wording)."""
    if m == 0:
        raise DataError(
            f"{what} has 0 sample(s) (shape=({m}, {n})) while a minimum of 1 is required."
        )
    if n == 0:
        raise DataError(
            f"{what} has 0 feature(s) (shape=({m}, {n})) while a minimum of 1 is required."
        )


def not_2d_message(what: str, shape) -> str:
    return (
        f"{what} must be 2-D (samples × features), got shape {tuple(shape)}; Reshape your data "
        "with array.reshape(-1, 1) for a single feature or array.reshape(1, -1) for a single "
        "sample"
    )


def check_features(xa: zarr.Array, samples_first: bool, where: str, stored: bool) -> Column:
    """Validate a 2-D feature array in its layout (real dtype, non-empty, chunks stored)."""
    check_dtype(xa.dtype, f"X '{where}'")
    m, n = xa.shape if samples_first else xa.shape[::-1]
    check_not_empty(m, n, f"X '{where}'")
    return _column(xa, where, stored)


def check_per_sample(arr: zarr.Array, n_samples: int, where: str, name: str, stored: bool):
    """Validate a per-sample array (``name``: "y" or "sample weights") against its features:
    shape (n_samples,), real dtype, chunks stored. Its chunking is free."""
    if arr.ndim != 1 or arr.shape[0] != n_samples:
        raise DataError(
            f"{name} '{where}' has shape {arr.shape} but X has {n_samples} samples; "
            f"expected shape ({n_samples},)"
        )
    check_dtype(arr.dtype, f"{name} '{where}'", kinds="biuf")
    return _column(arr, where, stored)


def _column(arr: zarr.Array, where: str, stored: bool) -> Column:
    stored = stored or _dlr_attrs(arr).get(ALL_CHUNKS_STORED) is True
    if stored:
        check_chunks_present(arr, where)
    return Column(arr, direct_decoder(arr, stored), packing_of(arr, where))


def check_chunks_present(arr: zarr.Array, where: str) -> None:
    """Raise if a chunk of ``arr`` is missing from the store (for an array recording that every
    chunk is stored: there zarr would silently read a lost chunk as fill values)."""
    store = arr.store_path.store
    prefix = arr.store_path.path
    prefix = f"{prefix}/" if prefix else ""

    async def keys() -> set[str]:
        return {k[len(prefix) :] async for k in store.list_prefix(prefix)}

    present = sync(keys())
    grid = chunk_grid(arr)
    counts = [math.ceil(s / c) for s, c in zip(arr.shape, grid, strict=True)]
    for coords in np.ndindex(*counts):
        key = arr.metadata.encode_chunk_key(tuple(int(c) for c in coords))
        if key not in present:
            raise DataError(
                f"chunk {coords} of array '{arr.path}' in '{where}' is missing from the store "
                f"(key '{prefix}{key}'); the array records that every chunk is stored, and zarr "
                "would read it as fill values, so dlr refuses it"
            )


def codecs() -> dict:
    """How dlr stores an array (``create_array`` keywords): little-endian bytes, blosc-lz4 with
    byte shuffle (fast to decode), a crc32c checksum so a corrupt chunk fails loudly instead of
    decoding to garbage, and every chunk stored — recorded in the array's attributes, so that a
    chunk missing later is reported as lost instead of read as fill values."""
    return {
        "serializer": BytesCodec(),
        "compressors": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec()],
        "config": {"write_empty_chunks": True},
        "attributes": {"dlr": {ALL_CHUNKS_STORED: True}},
    }


def create_arrays(
    group: zarr.Group,
    n_samples: int,
    n_features: int,
    chunk_samples: int,
    *,
    samples_first: bool = True,
    dtype="float32",
    x: str = "X",
    y: str = "y",
) -> tuple[zarr.Array, zarr.Array]:
    """Create empty feature and label arrays in the dlr format inside ``group``."""
    shape = (n_samples, n_features) if samples_first else (n_features, n_samples)
    chunks = (chunk_samples, n_features) if samples_first else (n_features, chunk_samples)
    xa = group.create_array(
        x,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        dimension_names=SAMPLES_FIRST if samples_first else FEATURES_FIRST,
        **codecs(),
    )
    ya = group.create_array(
        y,
        shape=(n_samples,),
        chunks=(chunk_samples,),
        dtype="uint8",
        dimension_names=("sample",),
        **codecs(),
    )
    return xa, ya


def describe(ds: Dataset) -> str:
    """A few human-readable lines about a dataset (``dlr info``)."""
    layout = "samples-first" if ds.samples_first else "features-first"
    bounds = ds.bounds
    last = bounds[-1][1] - bounds[-1][0]
    lines = [
        f"dataset   {ds.url}",
        f"X         '{ds.x.path}' {ds.x.dtype}, {layout} {ds.x.shape}: "
        f"{ds.n_samples} samples × {ds.n_features} features",
        f"y         '{ds.y.path}' {ds.y.dtype} ({ds.y.shape[0]},)"
        if ds.y is not None
        else "y         none",
        f"chunks    {ds.n_chunks} of {ds.chunk_samples} samples"
        + (f" (last {last})" if last != ds.chunk_samples else ""),
        f"codecs    zarr v{ds.x.metadata.zarr_format}: "
        + ", ".join(
            _codec_name(c) for c in (ds.x.serializer, *ds.x.filters, *ds.x.compressors) if c
        )
        + ("" if ds.decoders[0] else " (read through zarr)"),
    ]
    packing = ds.packings[0]
    dtype = packing.dtype if packing is not None else ds.x.dtype
    if packing is not None and packing.scales:
        lines.append(
            f"packed    CF: {ds.x.dtype} × scale_factor {packing.scale} + add_offset "
            f"{packing.offset or 0} → {dtype}, decoded as xarray does"
        )
    lines.append(
        f"decoded   {ds.n_samples * ds.n_features * dtype.itemsize / 1e6:.1f} MB of features"
    )
    meta = dict(zarr.open_group(ds.x.store_path.store, mode="r").attrs).get("dlr", {})
    if "true_coef" in meta:
        lines.append(
            f"generator {meta.get('generator')} (seed {meta.get('seed')}), "
            "true weights in the group attributes"
        )
    return "\n".join(lines)


def _codec_name(codec) -> str:
    name = type(codec).__name__.removesuffix("Codec").lower()
    cname = getattr(codec, "cname", None)
    return f"{name}-{getattr(cname, 'value', cname)}" if cname else name
