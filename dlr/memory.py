"""Memory budgets (parsing ``--cache-size`` values, the memory a process may still use under
its host's and its cgroup's limits, resolving ``auto``), the allocation of the arrays the chunk
cache keeps, and the buffers a thread reuses from task to task."""

import math
import mmap
import os
import re
import threading
from dataclasses import dataclass

import numpy as np
import psutil

from dlr.errors import DlrError

_UNITS = {
    "": 1,
    "B": 1,
    "K": 10**3,  # like dask's parse_bytes: a bare K, M, G or T is decimal
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}

#: Share of the memory left after streaming (locally, or on each worker) that ``auto`` caches.
AUTO_FRACTION = 0.5
#: Bytes a thread holds while it streams a chunk, per byte of the decoded chunk: the chunk's
#: stored bytes as read, the decoded chunk, and a decoder's intermediate copy.
STREAM_FACTOR = 3
#: Share of a memory-limited cgroup's free memory given to the workers of ``--workers N``
#: together; the rest is for the client process (which runs the scheduler and the nannies).
WORKERS_SHARE = 0.8
#: cgroup v1 reports "no limit" as a huge number (2^63 rounded down to a page).
_V1_UNLIMITED = 1 << 60


def parse_size(value) -> int | str:
    """``0``, ``512MB``, ``1.5G``, ``1.5GiB``, an int of bytes, or ``"auto"`` → bytes or
    ``"auto"``. Units: K/KB, M/MB, G/GB, T/TB (powers of 1000), KiB, MiB, GiB, TiB (of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value).strip()
    if text.lower() == "auto":
        return "auto"
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)", text.upper())
    if not match or match.group(2) not in _UNITS:
        raise DlrError(
            f"cannot read cache size {value!r}: expected 'auto', a number of bytes, or a size "
            "such as 512MB or 2GiB"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def human(n: float) -> str:
    """Bytes in words, three significant digits: ``300 MB``, ``1.5 GB``."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class CgroupLimit:
    """The memory limit that binds a process in its cgroup hierarchy.

    ``path`` is the cgroup directory whose limit leaves the least room (the process's own or an
    ancestor's), ``limit`` its limit in bytes, ``used`` its working set: usage minus the
    inactive file cache, which the kernel reclaims before it kills anything.
    """

    version: int
    path: str
    limit: int
    used: int

    @property
    def free(self) -> int:
        return max(0, self.limit - self.used)


def cgroup_limit(root: str = "/") -> CgroupLimit | None:
    """This process's binding cgroup memory limit (v1 or v2), or None if no limit is set.

    Reads ``/proc/self/cgroup`` (which cgroup the process is in, per hierarchy) and
    ``/proc/self/mountinfo`` (where each hierarchy is mounted, and which part of it), then
    every level from the process's cgroup up to the mount: cgroup v2's ``memory.max`` and
    ``memory.high`` with ``memory.current``; v1's ``memory.limit_in_bytes`` with
    ``memory.usage_in_bytes``. Limits are hierarchical, so the level with the least free memory
    binds. ``root`` prefixes every path (a fake tree, in tests).
    """
    try:
        memberships = _read(root, "/proc/self/cgroup").splitlines()
        mounts = _read(root, "/proc/self/mountinfo").splitlines()
    except OSError:
        return None
    found = []
    for version, mount_root, mount_point in _cgroup_mounts(mounts):
        member = _membership(memberships, version)
        if member is None:
            continue
        top = os.path.join(root, mount_point.lstrip("/"))
        relative = os.path.relpath(member, mount_root)
        here = top if relative.startswith("..") else os.path.normpath(os.path.join(top, relative))
        while True:
            limit = _limit(here, version)
            if limit is not None:
                found.append(CgroupLimit(version, here, limit, _used(here, version)))
            if here == top or len(here) <= len(top):
                break
            here = os.path.dirname(here)
    return min(found, key=lambda c: c.free, default=None)


def _read(root: str, path: str) -> str:
    with open(os.path.join(root, path.lstrip("/"))) as f:
        return f.read()


def _unescape(field: str) -> str:
    # mountinfo writes spaces, tabs, newlines and backslashes in paths as octal escapes
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _cgroup_mounts(lines: list[str]) -> list[tuple[int, str, str]]:
    """(version, root of the hierarchy the mount shows, mount point) of memory cgroup mounts."""
    mounts = []
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        fstype, options = tail[0], tail[2].split(",")
        if fstype == "cgroup2":
            mounts.append((2, _unescape(fields[3]), _unescape(fields[4])))
        elif fstype == "cgroup" and "memory" in options:
            mounts.append((1, _unescape(fields[3]), _unescape(fields[4])))
    return mounts


def _membership(lines: list[str], version: int) -> str | None:
    """The process's cgroup path in the v2 hierarchy or in the v1 memory hierarchy."""
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if version == 2 and parts[0] == "0" and controllers == "":
            return path.strip()
        if version == 1 and "memory" in controllers.split(","):
            return path.strip()
    return None


def _number(directory: str, name: str) -> int | None:
    try:
        with open(os.path.join(directory, name)) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (v2): no limit


def _limit(directory: str, version: int) -> int | None:
    if version == 2:
        limits = [_number(directory, "memory.max"), _number(directory, "memory.high")]
        limits = [v for v in limits if v is not None]
        return min(limits) if limits else None
    limit = _number(directory, "memory.limit_in_bytes")
    return limit if limit is not None and limit < _V1_UNLIMITED else None


def _used(directory: str, version: int) -> int:
    usage = _number(directory, "memory.current" if version == 2 else "memory.usage_in_bytes")
    inactive = 0
    try:
        with open(os.path.join(directory, "memory.stat")) as f:
            stat = dict(line.split() for line in f if len(line.split()) == 2)
        inactive = int(stat.get("inactive_file" if version == 2 else "total_inactive_file", 0))
    except (OSError, ValueError):
        pass
    return max(0, (usage or 0) - inactive)


@dataclass(frozen=True)
class Room:
    """Memory a process may still use: ``free`` bytes under ``limit`` (the binding total).
    ``kind`` says which limit binds — ``"host"``, ``"cgroup"`` or ``"worker"`` (a dask worker's
    ``memory_limit``) — and ``why`` says it in words."""

    free: int
    limit: int
    kind: str
    why: str


def memory_room(root: str = "/") -> Room:
    """The tighter of the host's available memory and this process's cgroup limit."""
    host = psutil.virtual_memory()
    cgroup = cgroup_limit(root)
    if cgroup is not None and cgroup.free < host.available:
        return Room(
            cgroup.free,
            cgroup.limit,
            "cgroup",
            f"the cgroup v{cgroup.version} memory limit of {human(cgroup.limit)} "
            f"({cgroup.path}, {human(cgroup.used)} in use)",
        )
    return Room(
        host.available, host.total, "host", f"the host's available memory ({human(host.total)})"
    )


def worker_room(dask_worker) -> tuple[Room, int]:
    """Run on a dask worker (``client.run``): its :class:`Room` and its number of threads.

    Besides the host's and the cgroup's limits, the worker's own ``memory_limit`` binds — or
    rather the first of its thresholds (``distributed.worker.memory.spill``, ``pause``,
    ``terminate``: 70 %, 80 %, 95 % by default), minus what the worker process uses: above it,
    the worker spills the cached chunks to disk, or stops running tasks altogether.
    """
    import dask

    room = memory_room()
    limit = dask_worker.memory_manager.memory_limit
    if limit:
        keys = ("spill", "pause", "terminate")
        fractions = [dask.config.get(f"distributed.worker.memory.{k}", False) for k in keys]
        usable = min([f for f in fractions if f] or [1.0])
        rss = psutil.Process().memory_info().rss
        if usable * limit - rss < room.free:
            room = Room(
                max(0, int(usable * limit) - rss),
                limit,
                "worker",
                f"the worker's memory_limit of {human(limit)} ({usable:.0%} of it before it "
                f"spills or pauses, {human(rss)} in use)",
            )
    return room, dask_worker.state.nthreads


def streaming_bytes(chunk_nbytes: int, threads: int) -> int:
    """Memory that streaming needs: ``threads`` chunks of ``chunk_nbytes`` decoded bytes in
    flight at once, each taking :data:`STREAM_FACTOR` times its size."""
    return STREAM_FACTOR * chunk_nbytes * threads


def check_streaming_fits(
    room: Room, chunk_nbytes: int, threads: int, chunk: str, where: str, *, task: str = "train"
):
    """Bytes left after streaming; a :class:`DlrError` naming the chunk size, the limit and what
    to do if streaming alone would not fit (the process's own use is already in ``room``).

    ``chunk`` names the largest chunk, ``where`` the process or worker (``""`` for this one),
    ``task`` what cannot run ("train", "predict", "evaluate").
    """
    need = streaming_bytes(chunk_nbytes, threads)
    if need <= room.free:
        return room.free - need
    at = f" on {where}" if where else ""
    if chunk_nbytes > room.limit:
        problem = f"{chunk} decodes to {human(chunk_nbytes)}, more than {room.why}"
        fewer = ""
    else:
        problem = (
            f"streaming {chunk} ({human(chunk_nbytes)} decoded) on {threads} thread"
            f"{'s' if threads > 1 else ''} needs about {human(need)} ({STREAM_FACTOR}× the chunk "
            f"per thread), but {room.why} leaves {human(room.free)}"
        )
        fewer = ", use fewer threads (DASK_NUM_WORKERS=1)" if threads > 1 and not where else ""
    raise DlrError(
        f"not enough memory to {task}{at}: {problem}; store the data in smaller chunks "
        f"(dlr make-data --chunk-samples, or rechunk){fewer}, or raise the memory limit"
    )


def auto_budget(left: int) -> int:
    """Bytes of decoded chunks ``auto`` caches, given the bytes left after streaming."""
    return int(left * AUTO_FRACTION)


def workers_memory_limit(n_workers: int, room: Room | None = None) -> int | None:
    """The ``memory_limit`` of each of ``n_workers`` local worker processes when this process
    runs in a memory-limited cgroup (dask's ``auto`` reads only the root cgroup's files, and
    would give each worker a share of the host's memory); None when no cgroup limit binds."""
    room = room or memory_room()
    if room.kind != "cgroup":
        return None
    return max(1, math.floor(room.free * WORKERS_SHARE / n_workers))


def small_page_empty(shape, dtype) -> np.ndarray:
    """An uninitialized array in its own anonymous mapping, without transparent huge pages.

    For arrays written once and kept (cached chunks) and for buffers reused many times
    (:func:`per_thread_array`). NumPy asks for transparent huge pages on
    large arrays, and where the kernel compacts memory to find them, first-touch faults cost
    1.6–2.3 s/GB (measured on a virtual machine); 4 KiB pages cost 0.4 s/GB and, unlike
    ``MAP_POPULATE``, fault in parallel from several threads.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes < mmap.PAGESIZE or not hasattr(mmap, "MAP_ANONYMOUS"):
        return np.empty(shape, dtype=dtype)
    buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


_per_thread = threading.local()


def per_thread(name: str, key, make, fits=None):
    """This thread's object ``name``: made by ``make()`` on first use and again whenever ``key``
    (a shape, say) differs from the one it was made for — or, given ``fits``, whenever
    ``fits(obj)`` is false of the one it has —, else the same object as last time.

    For scratch buffers a thread reuses from chunk to chunk instead of allocating megabytes per
    chunk: mapping and unmapping them costs fresh-page faults and, with several threads in one
    process, TLB flushes on the other cores (a cached pass over 4M × 64 float32 took 0.085 s
    with per-chunk buffers, 0.078 s with these).
    """
    slots = getattr(_per_thread, "slots", None)
    if slots is None:
        slots = _per_thread.slots = {}
    slot = slots.get(name)
    if slot is None or slot[0] != key or (fits is not None and not fits(slot[1])):
        slot = slots[name] = (key, make())
    return slot[1]


#: Where :func:`per_thread_array` arrays start: a multiple of this many bytes (a cache line,
#: and the alignment :mod:`dlr.linalg` gives BLAS).
ALIGN = 64


def per_thread_array(name: str, shape, dtype=np.float64, *, headroom: bool = False) -> np.ndarray:
    """This thread's scratch array ``name``: uninitialized, C-ordered, of ``shape`` and
    ``dtype``, starting on an :data:`ALIGN`-byte boundary, in a buffer of bytes made on first use
    and made again only when a larger array is asked for (never shrunk).

    Whatever the shapes asked for — a dataset's last, shorter chunk; the chunks of two datasets
    read in turn, as a holdout and the new spans are —, the thread keeps writing into the same
    memory, with no fresh pages to fault in. It holds at most the largest array asked for, or
    an eighth more with ``headroom``: for sizes that vary from call to call (compressed chunks),
    so that a slightly larger one does not make a new buffer.

    The buffer has small pages (:func:`small_page_empty`): one that grows never waits for the
    kernel to compact memory into huge pages (a 9 MB buffer for the new spans' holdout, after
    the pinned holdout's 3 MB ones, once took 96 ms to fault in).
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    buffer = per_thread(
        name,
        None,
        lambda: small_page_empty((nbytes + headroom * (nbytes // 8) + ALIGN,), np.uint8),
        lambda b: b.size >= nbytes + ALIGN,
    )
    start = -buffer.ctypes.data % ALIGN
    return buffer[start : start + nbytes].view(dtype).reshape(shape)
