"""Streaming memory is bounded by chunk size × threads: the peak memory a streaming training
process, or an ingest of a Parquet or CSV file, actually maps does not grow with the data."""

import os
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from dlr.synthetic import make_dataset

N_FEATURES = 32
CHUNK_SAMPLES = 16_384
CHUNK_BYTES = CHUNK_SAMPLES * N_FEATURES * 4  # 2 MiB of float32 features
MB = 2**20

#: ``dlr train`` in this process, then its peak resident set (VmHWM, the high-water mark of the
#: pages this process mapped; ru_maxrss would include the parent's, inherited across fork).
TRAIN_AND_REPORT_PEAK = """
import re, sys
from dlr.cli import main
main(sys.argv[1:], standalone_mode=False)
status = open("/proc/self/status").read()
print("VMHWM_KB", re.search(r"VmHWM:\\s*(\\d+) kB", status).group(1))
"""


def peak_rss_of_streaming_training(data: str, model: str) -> int:
    argv = ["-q", "train", data, "--model", model, "--cache-size", "0"]
    argv += ["--solver", "gd", "--max-iter", "2", "--tol", "0"]
    done = subprocess.run(
        [sys.executable, "-c", TRAIN_AND_REPORT_PEAK, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return int(re.search(r"VMHWM_KB (\d+)", done.stdout).group(1)) * 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is Linux's")
def test_peak_memory_of_streaming_training_does_not_grow_with_the_data(tmp_path):
    sizes = {"one chunk": 1, "3 chunks": 3, "12 chunks": 12}
    peaks = {}
    for name, chunks in sizes.items():
        data = str(tmp_path / f"{chunks}.zarr")
        samples = 2_000 if chunks == 1 else chunks * CHUNK_SAMPLES  # 1: the baseline, ~no data
        make_dataset(data, samples, N_FEATURES, chunk_samples=CHUNK_SAMPLES, dtype="float32")
        peaks[name] = peak_rss_of_streaming_training(data, str(tmp_path / f"model-{chunks}"))
    report = ", ".join(f"{k}: {v / MB:.0f} MiB" for k, v in peaks.items())
    # 18 MiB more data (9 chunks) may not cost even one chunk more
    assert peaks["12 chunks"] - peaks["3 chunks"] < CHUNK_BYTES, report
    # each thread holds a few chunk-sized buffers (compressed bytes, decoded chunk, float64
    # blocks) at most: the interpreter and libraries, plus chunk size × threads × 6
    bound = peaks["one chunk"] + 6 * CHUNK_BYTES * os.cpu_count()
    assert peaks["12 chunks"] < bound, f"{report}; bound {bound / MB:.0f} MiB"


#: ``dlr ingest`` in this process, then its peak resident set and the peak of Arrow's memory
#: pool (what pyarrow's readers hold, read ahead or cached).
INGEST_AND_REPORT_PEAKS = """
import re, sys
import pyarrow as pa
from dlr.cli import main
main(sys.argv[1:], standalone_mode=False)
status = open("/proc/self/status").read()
print("VMHWM_KB", re.search(r"VmHWM:\\s*(\\d+) kB", status).group(1))
print("ARROW_PEAK", pa.default_memory_pool().max_memory())
"""


def peaks_of_an_ingest(source: str, registry: str) -> tuple[int, int]:
    argv = ["-q", "ingest", source, "--registry", registry, "--label", "label"]
    done = subprocess.run(
        [sys.executable, "-c", INGEST_AND_REPORT_PEAKS, *argv, "--chunk-samples", "4096"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rss = int(re.search(r"VMHWM_KB (\d+)", done.stdout).group(1)) * 1024
    return rss, int(re.search(r"ARROW_PEAK (\d+)", done.stdout).group(1))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is Linux's")
@pytest.mark.parametrize("kind", ["parquet", "csv", "npy"])
def test_peak_memory_of_an_ingest_does_not_grow_with_the_file(tmp_path, kind):
    """Files as pyarrow and NumPy write them by default (Parquet: one row group for all these
    rows); four times the rows (77 MB more features) may cost neither Arrow's readers nor the
    process a fraction of that. pyarrow's defaults held the whole Parquet file (pre_buffer)
    and read a CSV file ahead by up to 32 blocks of 16 MB; a memory-mapped .npy file's pages
    counted once touched."""
    peaks = {}
    for rows in (200_000, 800_000):
        rng = np.random.default_rng(rows)
        X = rng.normal(size=(rows, 16))
        columns = {f"f{j}": X[:, j] for j in range(16)}
        t = pa.table(columns | {"label": (X[:, 0] > 0).astype(np.int64)})
        source = str(tmp_path / f"{rows}.{kind}")
        if kind == "parquet":
            pq.write_table(t, source)
        elif kind == "csv":
            pa_csv.write_csv(t, source)
        else:  # a structured array, one field per column
            array = np.zeros(rows, dtype=[(name, t.schema.field(name).type.to_pandas_dtype())
                                          for name in t.column_names])  # fmt: skip
            for name in t.column_names:
                array[name] = t.column(name).to_numpy()
            np.save(source, array)
        peaks[rows] = peaks_of_an_ingest(source, str(tmp_path / f"registry-{rows}"))
    (rss, arrow), (big_rss, big_arrow) = peaks[200_000], peaks[800_000]
    report = f"peak RSS {rss / MB:.0f} → {big_rss / MB:.0f} MiB, Arrow {arrow / MB:.0f} → " \
             f"{big_arrow / MB:.0f} MiB"  # fmt: skip
    assert big_arrow - arrow < 8 * MB, report
    assert big_rss - rss < 40 * MB, report
