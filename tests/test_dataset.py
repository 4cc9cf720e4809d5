"""Reading chunks: dlr's direct decoder gives exactly zarr's values, in every layout and dtype."""

import numpy as np
import pytest
import zarr

from dlr.dataset import _direct, open_dataset, read_block


@pytest.mark.parametrize("reuse", [False, True], ids=["fresh-buffers", "thread-buffers"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("samples_first", [True, False], ids=["samples-first", "features-first"])
def test_direct_reads_equal_zarrs_own_reads_including_the_ragged_last_chunk(
    dataset, dtype, samples_first, reuse
):
    ds = open_dataset(dataset(203, 5, 50, samples_first=samples_first, dtype=dtype))
    assert _direct(ds.x) and _direct(ds.y)
    for i, (start, stop) in enumerate(ds.chunk_bounds()):
        for arr in (ds.x, ds.y):
            got = read_block(arr, samples_first, start, stop, "d", i, reuse)
            expected = arr[start:stop] if arr.ndim == 1 or samples_first else arr[:, start:stop]
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(got, expected)


def test_streamed_reads_reuse_one_buffer_per_thread_and_cached_reads_do_not(dataset):
    ds = open_dataset(dataset(200, 3, 50))
    first = read_block(ds.x, True, 0, 50, "d", 0, True)
    second = read_block(ds.x, True, 50, 100, "d", 1, True)
    assert np.shares_memory(first, second)  # the first chunk's values are gone: streamed only
    kept = read_block(ds.x, True, 0, 50, "d", 0, False)
    again = read_block(ds.x, True, 50, 100, "d", 1, False)
    assert not np.shares_memory(kept, again)
    np.testing.assert_array_equal(kept, ds.x[0:50])


def test_arrays_in_other_encodings_are_read_through_zarr(tmp_path):
    group = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    x = group.create_array("X", shape=(100, 2), chunks=(30, 2), dtype="float32")
    x[:] = np.arange(200, dtype="float32").reshape(100, 2)
    assert not _direct(x)
    np.testing.assert_array_equal(read_block(x, True, 90, 100, "d", 3, True), x[90:100])
