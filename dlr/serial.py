"""Plain-data files: JSON documents and checksummed ``.npy`` blobs, exact to the bit, no pickle.

Models (:mod:`dlr.model_io`) and checkpoints (:mod:`dlr.checkpoint`) are both a JSON document
plus ``.npy`` arrays, each array named in the JSON with its sha256. They write floats the one
way of :func:`encode_float`, which keeps every bit: a finite float is a JSON number (Python
writes the shortest digits that read back as the same float), ±inf and nan are the objects
``{"float": "inf"}``, ``{"float": "-inf"}``, ``{"float": "nan"}`` (JSON has no such numbers).
A checkpoint also keeps its containers' types (:func:`encode`: tuples, named tuples, dicts of
any keys), a model file is plain JSON for people and other tools to read (:func:`to_plain`).
Loading never runs code from the file: only the named tuples the caller lists are rebuilt.
"""

import hashlib
import io
import json
import math
from collections.abc import Mapping

import numpy as np


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` file (no pickled objects)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def read_npy(data: bytes) -> np.ndarray:
    """The array of ``.npy`` bytes; raises ValueError for object arrays or damaged bytes."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def json_bytes(doc) -> bytes:
    """``doc`` (plain data, finite floats) as strict JSON, indented, with a final newline: how
    dlr writes every JSON document people read (models, registry files, run records, reports).
    """
    return (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(data: bytes, digest: str, name: str) -> bytes:
    """``data`` if its sha256 is ``digest``; else ValueError naming ``name``."""
    if sha256(data) != digest:
        raise ValueError(f"{name} does not match its checksum")
    return data


def encode_float(value: float) -> float | dict:
    """A float as JSON, exactly (see the module)."""
    value = float(value)
    return value if math.isfinite(value) else {"float": repr(value)}


def to_plain(value):
    """``value`` as plain JSON: arrays, tuples and lists as lists, dicts as objects (keys as
    strings), NumPy scalars as numbers, floats by :func:`encode_float`."""
    if isinstance(value, np.ndarray | np.generic):
        return to_plain(value.tolist())
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    if isinstance(value, float):
        return encode_float(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    raise TypeError(f"cannot store a value of type {type(value).__name__}")


def from_plain(doc):
    """Inverse of :func:`to_plain` as far as JSON tells: lists, objects, exact floats."""
    if isinstance(doc, list):
        return [from_plain(v) for v in doc]
    if isinstance(doc, dict):
        if doc.keys() == {"float"}:
            return float(doc["float"])
        return {k: from_plain(v) for k, v in doc.items()}
    return doc


def encode(
    value,
    arrays: dict[str, np.ndarray] | None,
    path: str,
    types: Mapping[str, type] = {},
):
    """A JSON-able structure of ``value``, exact to the bit (see the module).

    Arrays go to ``arrays`` under the file name ``<path>.npy`` (nested paths join with dots), or,
    when ``arrays`` is None, are written inline as their values. Named tuples must be among
    ``types`` (name → class), so that :func:`decode` can rebuild them without running code.
    """
    if isinstance(value, np.ndarray):
        if arrays is None:
            return {
                "ndarray": [encode(v, None, path) for v in value.ravel().tolist()],
                "dtype": value.dtype.str,
                "shape": list(value.shape),
            }
        name = f"{path}.npy"
        arrays[name] = value
        return {"array": name}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        if types.get(type(value).__name__) is not type(value):
            raise TypeError(f"cannot store a {type(value).__name__}")
        fields = {f: encode(v, arrays, f"{path}.{f}", types) for f, v in value._asdict().items()}
        return {"namedtuple": type(value).__name__, "fields": fields}
    if isinstance(value, tuple):
        return {"tuple": [encode(v, arrays, f"{path}.{i}", types) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode(v, arrays, f"{path}.{i}", types) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"dict": {k: encode(v, arrays, f"{path}.{k}", types) for k, v in value.items()}}
        return {
            "items": [
                [encode(k, None, path), encode(v, arrays, path, types)] for k, v in value.items()
            ]
        }
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return encode_float(value)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, np.str_):
        return str(value)
    raise TypeError(f"cannot store a value of type {type(value).__name__}")


def decode(doc, arrays: Mapping[str, np.ndarray] | None = None, types: Mapping[str, type] = {}):
    """Inverse of :func:`encode`; raises ValueError or KeyError for what it did not write."""
    if isinstance(doc, list):
        return [decode(v, arrays, types) for v in doc]
    if not isinstance(doc, dict):
        return doc
    if "array" in doc:
        return arrays[doc["array"]]
    if "ndarray" in doc:
        values = [decode(v) for v in doc["ndarray"]]
        return np.array(values, dtype=np.dtype(doc["dtype"])).reshape(doc["shape"])
    if "namedtuple" in doc:
        cls = types[doc["namedtuple"]]
        return cls(**{f: decode(v, arrays, types) for f, v in doc["fields"].items()})
    if "tuple" in doc:
        return tuple(decode(v, arrays, types) for v in doc["tuple"])
    if "dict" in doc:
        return {k: decode(v, arrays, types) for k, v in doc["dict"].items()}
    if "items" in doc:
        return {decode(k): decode(v, arrays, types) for k, v in doc["items"]}
    if "float" in doc:
        return float(doc["float"])
    raise ValueError(f"unknown entry {sorted(doc)}")
