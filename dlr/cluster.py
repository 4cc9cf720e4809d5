"""A local multi-process dask cluster: one ``dask scheduler`` and N ``dask worker`` processes.

It is the cluster path of a real deployment on one machine: separate processes talking over
sockets, listening on 127.0.0.1 only. :func:`local_cluster` starts it and stops every process it
started (workers first, then the scheduler; anything left after a grace period is killed), and
:func:`run_until_stopped` serves it until Ctrl-C or SIGTERM (``dlr cluster``).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

from dlr.errors import DlrError
from dlr.memory import workers_memory_limit

HOST = "127.0.0.1"
#: No dashboard; the HTTP server that still serves /health and /metrics listens on 127.0.0.1 too.
_NO_DASHBOARD = ["--no-dashboard", "--dashboard-address", f"{HOST}:0"]
#: Seconds a process gets to exit after SIGTERM before it is killed.
STOP_GRACE = 10.0


@dataclass(frozen=True)
class LocalProcessCluster:
    """A running local cluster: where to reach it and the processes that make it up."""

    address: str
    scheduler_file: str
    log_dir: str
    processes: dict

    def check_running(self) -> None:
        """Raise :class:`DlrError` if a process of the cluster has exited."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise DlrError(_exited(name, process, self.log_dir))


@contextmanager
def local_cluster(
    n_workers: int = 2,
    *,
    threads_per_worker: int = 1,
    memory_limit: str = "auto",
    port: int = 0,
    scheduler_file: str | None = None,
    tls: tuple[str, str, str | None] | None = None,
    cwd: str | None = None,
    timeout: float = 60.0,
) -> Iterator[LocalProcessCluster]:
    """Start a scheduler and ``n_workers`` worker processes on 127.0.0.1; stop them on exit.

    Parameters
    ----------
    n_workers : int
        Worker processes (each under its own nanny process).
    threads_per_worker : int
        Threads of each worker.
    memory_limit : str
        Memory limit of each worker: ``auto``, ``0`` (none) or a size such as ``4GB``. In a
        memory-limited cgroup, ``auto`` shares what the cgroup has free among the workers (dask's
        own ``auto`` reads only the root cgroup's limit).
    port : int
        Scheduler port; 0 picks a free one.
    scheduler_file : str, optional
        Where to write the scheduler file (default: in a temporary directory). Removed on exit.
    tls : (ca_file, cert, key), optional
        Serve TLS only, with these PEM files for the scheduler and the workers (``key`` may be
        None if the key is in the certificate file).
    cwd : str, optional
        Working directory of the processes (default: this process's).
    timeout : float
        Seconds to wait for the scheduler and all workers to be up.

    Yields
    ------
    LocalProcessCluster
        ``address`` is ``tcp://127.0.0.1:PORT`` (``tls://`` with ``tls``).
    """
    if n_workers < 1 or threads_per_worker < 1:
        raise DlrError(
            f"a cluster needs at least 1 worker of at least 1 thread, got {n_workers} workers "
            f"of {threads_per_worker} threads"
        )
    if not 0 <= port <= 65535:
        raise DlrError(f"port must be between 0 and 65535, got {port}")
    if port and not _port_free(port):
        raise DlrError(f"port {port} of {HOST} is in use; choose another (0: any free port)")
    if memory_limit == "auto":
        memory_limit = workers_memory_limit(n_workers) or "auto"
    log_dir = tempfile.mkdtemp(prefix="dlr-cluster-")
    scheduler_file = os.path.abspath(scheduler_file or os.path.join(log_dir, "scheduler.json"))
    if os.path.exists(scheduler_file):
        os.remove(scheduler_file)  # a stale file would give an old address
    tls_args = []
    if tls is not None:
        ca_file, cert, key = tls
        tls_args = ["--tls-ca-file", ca_file, "--tls-cert", cert]
        tls_args += ["--tls-key", key] if key else []
    processes: dict[str, subprocess.Popen] = {}
    try:
        deadline = time.monotonic() + timeout
        processes["scheduler"] = _start(
            ["distributed.cli.dask_scheduler", "--host", HOST, "--port", str(port)]
            + ["--scheduler-file", scheduler_file]
            + _NO_DASHBOARD
            + (["--protocol", "tls"] if tls else [])
            + tls_args,
            os.path.join(log_dir, "scheduler.log"),
            cwd,
        )
        address = _wait_for_scheduler_file(scheduler_file, processes, log_dir, deadline)
        for i in range(n_workers):
            processes[f"worker {i}"] = _start(
                ["distributed.cli.dask_worker", address, "--host", HOST, "--name", f"dlr-{i}"]
                + ["--nthreads", str(threads_per_worker), "--memory-limit", str(memory_limit)]
                + _NO_DASHBOARD
                + tls_args,
                os.path.join(log_dir, f"worker-{i}.log"),
                cwd,
            )
        cluster = LocalProcessCluster(address, scheduler_file, log_dir, processes)
        _wait_for_workers(cluster, n_workers, tls, deadline)
        yield cluster
    finally:
        _stop([p for name, p in processes.items() if name != "scheduler"])
        _stop([p for name, p in processes.items() if name == "scheduler"])
        if os.path.exists(scheduler_file):
            os.remove(scheduler_file)
        shutil.rmtree(log_dir, ignore_errors=True)


def run_until_stopped(cluster: LocalProcessCluster, poll: float = 0.5) -> str:
    """Serve ``cluster`` until SIGINT, SIGTERM or SIGHUP; return the signal's name.

    Raises :class:`DlrError` if one of its processes exits on its own meanwhile.
    """
    received: list[int] = []
    stop = threading.Event()

    def handler(signum, frame):
        received.append(signum)
        stop.set()

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        while not stop.wait(poll):
            cluster.check_running()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return signal.Signals(received[0]).name


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the scheduler binds
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _start(args: list[str], log_path: str, cwd: str | None) -> subprocess.Popen:
    # A session of their own: a Ctrl-C at the terminal reaches only dlr, which then stops the
    # workers before the scheduler instead of every process racing to shut down.
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )


def _wait_for_scheduler_file(path: str, processes: dict, log_dir: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        if processes["scheduler"].poll() is not None:
            raise DlrError(_exited("scheduler", processes["scheduler"], log_dir))
        try:
            with open(path) as f:
                return json.load(f)["address"]
        except (FileNotFoundError, ValueError, KeyError):
            time.sleep(0.05)  # not written yet, or written only in part
    raise DlrError(f"the dask scheduler did not start in time; see {log_dir}/scheduler.log")


def _wait_for_workers(cluster: LocalProcessCluster, n: int, tls, deadline: float) -> None:
    from distributed import Client

    from dlr.scheduling import tls_security

    security = tls_security(*tls) if tls else None
    remaining = max(1.0, deadline - time.monotonic())
    with Client(
        cluster.address, security=security, timeout=remaining, set_as_default=False
    ) as client:
        while len(client.scheduler_info(n_workers=-1)["workers"]) < n:
            cluster.check_running()
            if time.monotonic() > deadline:
                raise DlrError(f"{n} dask workers did not start in time; see {cluster.log_dir}")
            time.sleep(0.1)


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM ``processes``, wait, then kill them and whatever they started that is left."""
    descendants = []
    for p in processes:
        try:
            descendants += psutil.Process(p.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for p in processes:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    _, alive = psutil.wait_procs(descendants, timeout=max(0.0, deadline - time.monotonic()))
    for child in alive:
        child.kill()
    psutil.wait_procs(alive, timeout=STOP_GRACE)


def _exited(name: str, process: subprocess.Popen, log_dir: str) -> str:
    log = os.path.join(log_dir, name.replace(" ", "-") + ".log")
    try:
        with open(log, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        lines = []
    last = f": {lines[-1]}" if lines else ""
    return f"the dask {name} exited with status {process.returncode}{last}"
