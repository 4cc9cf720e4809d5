"""Where a chunk comes from, and the checks of its values that name it when they fail.

A :class:`ChunkContext` travels with every chunk task: when a value is bad, the error says which
dataset, which chunk and which sample, in one line (:class:`dlr.DataError`).
"""

import numpy as np

from dlr.errors import DataError


class ChunkContext:
    """Chunk ``chunk`` of ``origin`` (a quoted path or a description), samples start..stop−1.

    Attributes
    ----------
    origin : str
        What holds the data, as error messages name it (e.g. ``"'data.zarr'"``).
    chunk : int
        Index of the chunk along the samples.
    start, stop : int
        The chunk's samples, ``start`` inclusive, ``stop`` exclusive.
    """

    def __init__(self, origin: str, chunk: int, start: int, stop: int):
        self.origin, self.chunk, self.start, self.stop = origin, chunk, start, stop

    def where(self) -> str:
        return f"{self.origin}, chunk {self.chunk} (samples {self.start}–{self.stop - 1})"

    def _first(self, ok: np.ndarray, offset: int = 0) -> int:
        return self.start + offset + int(np.argmin(ok))

    def features(self, xb: np.ndarray, offset: int) -> None:
        """Raise if block ``xb`` (k, n), starting at sample ``offset`` of the chunk, has NaN/inf."""
        finite = np.isfinite(xb)
        if not finite.all():  # over the whole block first: ~10× faster than row by row
            first = self._first(finite.all(axis=1), offset)
            raise DataError(f"X holds NaN or inf in {self.where()}: first at sample {first}")

    def labels(self, y: np.ndarray) -> None:
        """Raise unless every label (m_c,) is a finite integer."""
        if y.dtype.kind == "f":
            finite = np.isfinite(y)
            if not finite.all():
                raise DataError(
                    f"y holds NaN or inf in {self.where()}: first at sample {self._first(finite)}"
                )
            integral = y == np.round(y)
            if not integral.all():
                i = int(np.argmin(integral))
                raise DataError(
                    f"y must hold integer class labels (not a continuous target), but "
                    f"{self.where()} has {y[i]:g} at sample {self.start + i}"
                )

    def weights(self, s: np.ndarray) -> None:
        """Raise unless every sample weight (m_c,) is finite and ≥ 0."""
        ok = np.isfinite(s) & (s >= 0)
        if not ok.all():
            i = int(np.argmin(ok))
            raise DataError(
                f"sample weights must be finite and ≥ 0, but {self.where()} has {s[i]:g} "
                f"at sample {self.start + i}"
            )
