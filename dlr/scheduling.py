"""Choosing the dask scheduler a run uses.

By default dlr runs on whatever is active: a ``distributed.Client`` set as default, dask's
configured scheduler (``dask.config.set(scheduler="sync")``), or else the local threaded scheduler.
:func:`scheduler` lets the CLI (and users) pick one explicitly: a running cluster by address or
scheduler file (optionally over TLS), or a private local cluster.
"""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from dlr.errors import DlrError

if TYPE_CHECKING:
    from distributed import Client
    from distributed.security import Security


def tls_security(
    ca_file: str | None, cert: str | None, key: str | None = None
) -> "Security | None":
    """A ``distributed.security.Security`` that requires encryption, or None without TLS files.

    Like dask's own ``--tls-ca-file/--tls-cert/--tls-key`` options, one certificate serves every
    role. ``key`` may be omitted when the key is appended to the certificate file.

    Parameters
    ----------
    ca_file : str or None
        PEM file of the certificate authority that signed the cluster's certificates.
    cert : str or None
        PEM certificate of this client.
    key : str or None
        PEM private key of ``cert``.

    Returns
    -------
    distributed.security.Security or None
    """
    if not (ca_file or cert or key):
        return None
    if not (ca_file and cert):
        raise DlrError(
            "TLS needs --tls-ca-file and --tls-cert (and --tls-key unless the key is in the "
            "certificate file)"
        )
    for option, path in (("--tls-ca-file", ca_file), ("--tls-cert", cert), ("--tls-key", key)):
        if path and not os.path.isfile(path):
            raise DlrError(f"{option} '{path}' does not exist")
    from distributed.security import Security

    return Security(
        require_encryption=True,
        tls_ca_file=ca_file,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
    )


def read_scheduler_file(path: str) -> str:
    """The scheduler address in a scheduler file written by ``dask scheduler --scheduler-file``
    (or ``dlr cluster``)."""
    try:
        with open(path) as f:
            info = json.load(f)
    except FileNotFoundError:
        raise DlrError(
            f"scheduler file '{path}' does not exist; start the scheduler with "
            "--scheduler-file (or run `dlr cluster`) first"
        ) from None
    except (OSError, ValueError) as e:
        raise DlrError(f"cannot read scheduler file '{path}': {e}") from None
    address = info.get("address") if isinstance(info, dict) else None
    if not isinstance(address, str) or not address:
        raise DlrError(f"scheduler file '{path}' holds no scheduler address")
    return address


def connect(address: str, security: "Security | None" = None) -> "Client":
    """A ``distributed.Client`` (set as default) connected to the scheduler at ``address``.

    Raises :class:`DlrError` in one line if the TLS settings do not fit the address, or if the
    scheduler cannot be reached within dask's ``distributed.comm.timeouts.connect`` (30 s by
    default; e.g. ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=5s`` to give up sooner).
    """
    from distributed import Client

    if security is not None:
        if "://" not in address:
            address = f"tls://{address}"
        elif not address.startswith("tls://"):
            raise DlrError(
                f"TLS options were given but the scheduler address {address} is not tls://HOST:PORT"
            )
    elif address.startswith("tls://"):
        raise DlrError(
            f"the scheduler at {address} uses TLS: pass --tls-ca-file, --tls-cert and --tls-key"
        )
    try:
        return Client(address, security=security)
    except (OSError, ValueError) as e:
        # the last line, without distributed's "in <TCP (closed) local=... remote=...>: " prefix
        reason = (str(e).strip().splitlines() or [type(e).__name__])[-1].split(">: ")[-1]
        raise DlrError(
            f"cannot connect to the dask scheduler at {address} ({reason}); check that it is "
            "running and reachable from here, and pass the --tls-* options if it uses TLS"
        ) from None


@contextmanager
def scheduler(
    address: str | None = None,
    workers: int | None = None,
    *,
    scheduler_file: str | None = None,
    security: "Security | None" = None,
) -> Iterator["Client | None"]:
    """Make a scheduler active for the duration of the block; yields the Client or None.

    Parameters
    ----------
    address : str, optional
        A running ``dask scheduler`` (``tcp://host:port``, or ``tls://host:port`` with
        ``security``).
    workers : int, optional
        Start a LocalCluster of this many worker processes listening on 127.0.0.1 only, and stop
        it on exit. In a memory-limited cgroup their ``memory_limit`` shares what the cgroup
        has free (see :func:`dlr.memory.workers_memory_limit`); else it is dask's ``auto``.
    scheduler_file : str, optional
        Read the address of a running scheduler from this file.
    security : distributed.security.Security, optional
        TLS settings for connecting to ``address`` (see :func:`tls_security`).

    With none of ``address``, ``workers`` and ``scheduler_file``, ``DASK_SCHEDULER_ADDRESS`` is
    used if set; otherwise the active scheduler is left as it is and None is yielded.
    """
    given = [v for v in (address, scheduler_file, workers) if v is not None]
    if len(given) > 1:
        raise DlrError(
            "give only one of a scheduler address, a scheduler file and a number of local workers"
        )
    if workers is not None and workers < 1:
        raise DlrError(f"--workers must be at least 1, got {workers}")
    if workers and security is not None:
        raise DlrError(
            "the --tls-* options are for connecting to a running scheduler; --workers starts a "
            "private cluster on 127.0.0.1"
        )
    if scheduler_file:
        address = read_scheduler_file(scheduler_file)
    elif not workers:
        address = address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if not address and not workers:
        if security is not None:
            raise DlrError("the --tls-* options need --scheduler or --scheduler-file")
        yield None
        return
    if workers:
        from distributed import Client, LocalCluster

        from dlr.memory import workers_memory_limit

        threads = max(1, (os.cpu_count() or 1) // workers)
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=threads,
                memory_limit=workers_memory_limit(workers) or "auto",
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    with connect(address, security) as client:
        yield client
