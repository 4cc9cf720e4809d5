"""CF packing and missing values in zarr arrays, decoded as xarray decodes them.

xarray (like netCDF) stores a variable whose encoding packs it — floats stored as int16, say —
with the attributes ``scale_factor`` and ``add_offset``: the value is raw × scale_factor +
add_offset, in a float dtype it chooses from the raw dtype and the attributes' types. A raw
value equal to ``_FillValue`` or ``missing_value`` is missing. xarray keeps ``_FillValue`` as an
attribute in zarr v3 (base64 for float arrays) and as the array's fill value in zarr v2.

dlr decodes these into the values and dtype xarray gives, and refuses a missing value with an
error naming the chunk and sample, since it does not train on them. Only arrays with such
attributes take this path: :func:`packing_of` is None for every other array, which is read as
stored. In zarr v2 the array's fill value counts as ``_FillValue`` only in packed arrays (those
with ``scale_factor`` or ``add_offset``); elsewhere it keeps zarr's meaning, the value of an
absent chunk (xarray would read every value equal to it — a class 0, say — as missing).
"""

import base64
import binascii
import math
import struct
from dataclasses import dataclass

import numpy as np
import zarr

from dlr.errors import DataError
from dlr.memory import per_thread_array, small_page_empty

#: Attributes saying that a raw value is missing.
FILL_ATTRIBUTES = ("_FillValue", "missing_value")


@dataclass(frozen=True)
class Packing:
    """How an array's raw values decode: ``scale`` and ``offset`` (None where the attribute is
    absent; Python numbers, as the attributes hold them), ``fills`` the raw values that are
    missing, as ((attribute, value), ...), and ``dtype`` the decoded dtype (the raw one when
    only fills are given: the values are the raw values)."""

    scale: int | float | None
    offset: int | float | None
    fills: tuple
    dtype: np.dtype

    @property
    def scales(self) -> bool:
        return self.scale is not None or self.offset is not None


def packing_of(arr: zarr.Array, where: str) -> Packing | None:
    """The CF packing of ``arr`` (at ``where``, for errors), or None if it has none.

    Raises :class:`DataError` for attributes dlr cannot decode as xarray does: a scale or
    offset that is not a number, a fill value that is not one, or ``_Unsigned``.
    """
    attrs = arr.attrs
    raw = np.dtype(arr.dtype)
    if "_Unsigned" in attrs:
        raise DataError(
            f"array '{arr.path}' in {where} has the netCDF attribute _Unsigned="
            f"{attrs['_Unsigned']!r}, which dlr does not decode; store it in an unsigned dtype"
        )
    scale, offset = (_number(attrs.get(a), arr, where, a) for a in ("scale_factor", "add_offset"))
    packed = scale is not None or offset is not None
    given = [(a, attrs[a]) for a in FILL_ATTRIBUTES if a in attrs]
    if arr.metadata.zarr_format == 2 and packed and arr.fill_value is not None:
        given = [(a, v) for a, v in given if a != "_FillValue"]
        given.append(("_FillValue", np.asarray(arr.fill_value).item()))
    fills = []
    for attribute, value in given:
        if attribute == "_FillValue" and arr.metadata.zarr_format == 3 and raw.kind == "f":
            value = _base64_double(value, arr, where)
        for v in np.ravel(np.asarray(value, dtype=object)).tolist():
            v = _number(v, arr, where, attribute)
            if not (isinstance(v, float) and math.isnan(v)):  # NaN matches nothing
                fills.append((attribute, v))
    if not packed and not fills:
        return None
    return Packing(scale, offset, tuple(fills), float_dtype(raw, scale, offset) if packed else raw)


def float_dtype(raw: np.dtype, scale, offset) -> np.dtype:
    """The dtype xarray decodes packed values into (``xarray.coding.variables.
    _choose_float_dtype``), from the types of the attributes as zarr's JSON gives them."""
    scale_type = np.dtype(type(scale)) if scale is not None else None
    offset_type = np.dtype(type(offset)) if offset is not None else None
    if scale_type is not None and scale_type == offset_type and scale_type.kind == "f":
        return np.dtype(np.float64) if raw.itemsize == 4 and raw.kind in "iu" else scale_type
    if offset_type is not None:
        return np.dtype(np.float64)
    return scale_type


def unpack(
    raw: np.ndarray,
    packing: Packing,
    arr: zarr.Array,
    samples_first: bool,
    where: str,
    start: int,
    reuse: bool,
) -> np.ndarray:
    """The decoded values of ``raw``, a block of ``arr`` whose first sample is ``start`` (``where``
    names the chunk): raw × scale + offset in ``packing.dtype``, computed as xarray does; with
    ``reuse``, in a buffer of this thread that its next block overwrites. A raw value equal to
    a fill is a :class:`DataError` naming its first sample."""
    for attribute, value in packing.fills:
        missing = raw == value
        if missing.any():
            if missing.ndim == 2:
                missing = missing.any(axis=1 if samples_first else 0)
            raise DataError(
                f"array '{arr.path}' holds a missing value ({attribute} {value}) in {where}: "
                f"first at sample {start + int(np.argmax(missing))}; dlr does not train on "
                "missing values: fill or drop them first"
            )
    if not packing.scales:
        return raw
    if reuse:
        out = per_thread_array(f"unpacked {arr.path}", raw.shape, packing.dtype)
    else:
        out = small_page_empty(raw.shape, packing.dtype)
    out[...] = raw
    if packing.scale is not None:
        out *= packing.scale
    if packing.offset is not None:
        out += packing.offset
    return out


def _number(value, arr: zarr.Array, where: str, attribute: str):
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise DataError(
        f"array '{arr.path}' in {where} has attribute {attribute}={value!r}; expected a number"
    )


def _base64_double(value, arr: zarr.Array, where: str) -> float:
    """xarray's zarr v3 ``_FillValue`` of a float array: a little-endian double in base64."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    try:
        return struct.unpack("<d", base64.standard_b64decode(value))[0]
    except (TypeError, ValueError, binascii.Error, struct.error):
        raise DataError(
            f"array '{arr.path}' in {where} has attribute _FillValue={value!r}; expected a "
            "number, or a double in base64 as xarray writes it"
        ) from None
