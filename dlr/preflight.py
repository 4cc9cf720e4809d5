"""Checking, before a run starts, that every dask worker can open the dataset.

On a cluster the chunks are read by the workers, not by the client, so a path that exists only on
the client's machine — or a relative path, which each worker resolves in its own working
directory — would fail deep inside a task, or worse: zarr reads chunks missing from a store as
fill values. A tiny task on every worker opens the group and reads its arrays' metadata, and the
run stops with one clear error if any worker sees something else than the client does.
"""

from typing import TYPE_CHECKING

from dlr.atomic import is_local
from dlr.errors import DataError

if TYPE_CHECKING:
    from distributed import Client

#: How long to wait for the first worker to join a scheduler that has none yet.
WORKER_WAIT_SECONDS = 60
#: Workers named in an error message before "and N more".
NAMED_WORKERS = 3


def describe_arrays(url: str, storage_options: dict | None, names: tuple[str, ...]) -> dict | str:
    """Shape, chunk grid and dtype of the arrays ``names`` of the zarr group at ``url``, as seen
    by the calling process; or, if it cannot open them, a short reason."""
    import zarr

    try:
        group = zarr.open_group(url, mode="r", storage_options=storage_options)
        arrays = {name: group[name] for name in names}
        return {
            name: [list(a.shape), list(getattr(a, "shards", None) or a.chunks), str(a.dtype)]
            for name, a in arrays.items()
        }
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return "no such path on the worker" if is_local(url) else "no zarr group at that URL"
    except KeyError as e:
        return f"no array {e} in the group"
    except PermissionError:
        return "permission denied"
    except Exception as e:  # anything the store raises: report it, don't crash the worker
        text = str(e).strip().splitlines()
        return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def check_workers(
    client: "Client",
    url: str,
    storage_options: dict | None = None,
    *,
    arrays: tuple[str, ...] = ("X", "y"),
) -> None:
    """Raise :class:`DataError` unless every worker of ``client`` sees the dataset at ``url`` as
    this process does (if this process cannot open it either, the run itself reports why).

    Parameters
    ----------
    client : distributed.Client
        Connected to the cluster that will run the tasks.
    url : str
        The dataset's path or URL, exactly as the tasks will use it.
    storage_options : dict, optional
        fsspec options for ``url`` (they travel to the workers with the tasks).
    arrays : tuple of str
        Names of the arrays the run reads (``("X",)`` for prediction).
    """
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
    except TimeoutError:
        raise DataError(
            f"no dask worker joined the scheduler at {client.scheduler.address} within "
            f"{WORKER_WAIT_SECONDS} s; start workers, or check that they can reach the scheduler"
        ) from None
    expected = describe_arrays(url, storage_options, arrays)
    if isinstance(expected, str):
        return
    seen = client.run(describe_arrays, url, storage_options, arrays, on_error="return")
    problems: dict[str, list[str]] = {}
    for worker, result in sorted(seen.items()):
        if isinstance(result, BaseException):  # the check itself could not run there
            reason = (
                f"{type(result).__name__}: {result} (dlr and its dependencies must be installed "
                "on the workers, in the same versions as here)"
            )
        elif isinstance(result, str):
            reason = result + _storage_hint(url)
        elif result != expected:
            reason = "its shapes, chunks or dtypes differ from what this machine sees"
            reason += _storage_hint(url)
        else:
            continue
        problems.setdefault(reason, []).append(worker)
    if problems:
        raise DataError("; ".join(_message(url, r, w) for r, w in problems.items()))


def _storage_hint(url: str) -> str:
    if not is_local(url):
        return "; check the URL and the storage options (endpoint, credentials)"
    relative = not url.removeprefix("file://").startswith("/")
    return (
        " (a relative path is resolved in each worker's working directory)" if relative else ""
    ) + "; put the data on shared storage mounted at the same path, or object storage"


def _message(url: str, reason: str, workers: list[str]) -> str:
    named = ", ".join(workers[:NAMED_WORKERS])
    if len(workers) > NAMED_WORKERS:
        named += f" and {len(workers) - NAMED_WORKERS} more"
    return f"worker{'s' if len(workers) > 1 else ''} {named} cannot open '{url}': {reason}"
