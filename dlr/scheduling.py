"""Choosing the dask scheduler a run uses.

By default dlr runs on whatever is active: a ``distributed.Client`` set as default, dask's
configured scheduler (``dask.config.set(scheduler="sync")``), or else the local threaded scheduler.
:func:`scheduler` lets the CLI (and users) pick one explicitly.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager

from dlr.errors import DlrError


@contextmanager
def scheduler(address: str | None = None, workers: int | None = None) -> Iterator[object]:
    """Make a scheduler active for the duration of the block; yields the Client or None.

    - ``workers=N``: start a LocalCluster of N worker processes listening on 127.0.0.1 only,
      and stop it on exit;
    - ``address``: connect to a running ``dask scheduler`` (``tcp://host:port``);
    - neither: ``DASK_SCHEDULER_ADDRESS`` if set, else leave the active scheduler as it is.
    """
    if address and workers:
        raise DlrError("give either a scheduler address or a number of local workers, not both")
    address = address or (None if workers else os.environ.get("DASK_SCHEDULER_ADDRESS"))
    if workers is not None and workers < 1:
        raise DlrError(f"--workers must be at least 1, got {workers}")
    if not address and not workers:
        yield None
        return
    from distributed import Client, LocalCluster

    if workers:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=threads,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(address, timeout="10s")
    except OSError as e:
        raise DlrError(f"cannot reach the dask scheduler at {address}: {e}") from None
    with client:
        yield client
