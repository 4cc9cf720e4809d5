"""Same data, chunking and settings: bit-identical weights on any scheduler and worker count."""

import dask
import numpy as np
import pytest
from distributed import get_task_stream

import dlr
from dlr.scheduling import scheduler


def fit(path, **params):
    return dlr.LogisticRegression(**{"learning_rate": 1.0, "max_iter": 25, "tol": 0, **params}).fit(
        path
    )


SOLVERS = {
    "gd": {"solver": "gd", "C": np.inf},
    "newton-l1": {"solver": "newton", "C": 0.1, "l1_ratio": 0.5, "max_iter": 6},
    "lbfgs-standardized": {"solver": "lbfgs", "standardize": True, "max_iter": 12},
}


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 worker processes (listening on 127.0.0.1), shared by this module."""
    with scheduler(workers=2) as client:
        yield client


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("cache_size", ["auto", 0], ids=["cached", "streamed"])
def test_weights_are_bit_identical_on_sync_threads_and_a_two_process_cluster(
    dataset, cluster, cache_size, solver
):
    path = dataset(1000, 6, 97)
    params = {"cache_size": cache_size, **SOLVERS[solver]}
    results = {}
    with dask.config.set(scheduler="sync"):
        results["sync"] = fit(path, **params)
    with dask.config.set(scheduler="threads", num_workers=2):
        results["threads"] = fit(path, **params)
    with dask.config.set(scheduler=cluster.get), get_task_stream(cluster) as stream:
        results["cluster"] = fit(path, **params)
    kernel_tasks = [t for t in stream.data if "dlr-part" in str(t["key"])]
    # every pass after the first (summary) one runs one task per chunk (11), on the workers
    assert len(kernel_tasks) == (results["cluster"].n_passes_ - 1) * 11
    assert results["cluster"].cached_bytes_ == results["threads"].cached_bytes_
    for name in ("threads", "cluster"):
        np.testing.assert_array_equal(results[name].coef_, results["sync"].coef_, err_msg=name)
        np.testing.assert_array_equal(results[name].intercept_, results["sync"].intercept_)
        np.testing.assert_array_equal(results[name].loss_history_, results["sync"].loss_history_)


def test_a_warm_start_is_bit_identical_on_sync_threads_and_a_two_process_cluster(dataset, cluster):
    """Its start is evaluated in the summary tasks and its L-BFGS memory carried over."""
    path = dataset(1000, 6, 97)
    params = {"solver": "lbfgs", "C": 0.5, "tol": 0}
    start = dlr.LogisticRegression(max_iter=4, **params).fit(path)
    assert start.lbfgs_memory_.shape[1] == 4
    results = {}
    for name, options in {
        "sync": {"scheduler": "sync"},
        "threads": {"scheduler": "threads", "num_workers": 2},
        "cluster": {"scheduler": cluster.get},
    }.items():
        with dask.config.set(**options), get_task_stream(cluster) as stream:
            results[name] = dlr.LogisticRegression(max_iter=6, **params).fit(path, init=start)
    kernel_tasks = [t for t in stream.data if "dlr-part" in str(t["key"])]
    assert len(kernel_tasks) == (results["cluster"].n_passes_ - 1) * 11  # none for the start
    for name in ("threads", "cluster"):
        np.testing.assert_array_equal(results[name].coef_, results["sync"].coef_, err_msg=name)
        np.testing.assert_array_equal(results[name].loss_history_, results["sync"].loss_history_)
        np.testing.assert_array_equal(results[name].lbfgs_memory_, results["sync"].lbfgs_memory_)


def test_numpy_and_dask_inputs_train_bit_identically_on_the_cluster(cluster):
    import dask.array as da

    rng = np.random.default_rng(1)
    X = rng.standard_normal((700, 4))
    y = (rng.random(700) < 0.3).astype(np.int64)
    Xd = da.from_array(X, chunks=(128, 4))
    local = dlr.LogisticRegression(max_iter=10, tol=0).fit(Xd, y)
    with dask.config.set(scheduler=cluster.get):
        remote = dlr.LogisticRegression(max_iter=10, tol=0).fit(Xd, y)
        remote_numpy = dlr.LogisticRegression(max_iter=10, tol=0).fit(X, y)
    np.testing.assert_array_equal(remote.coef_, local.coef_)
    local_numpy = dlr.LogisticRegression(max_iter=10, tol=0).fit(X, y)
    np.testing.assert_array_equal(remote_numpy.coef_, local_numpy.coef_)


def test_the_embedded_cluster_listens_on_loopback_only(cluster):
    info = cluster.scheduler_info()
    assert cluster.scheduler.address.startswith("tcp://127.0.0.1:")
    assert len(info["workers"]) == 2
    assert all(addr.startswith("tcp://127.0.0.1:") for addr in info["workers"])


FRESH_PROCESS_FIT = """
import hashlib, sys
import numpy as np
import dlr
model = dlr.LogisticRegression(solver=sys.argv[2], C=0.5, max_iter=8, tol=0, cache_size=0)
model.fit(sys.argv[1])
print(hashlib.sha256(model.coef_.tobytes() + model.loss_history_.tobytes()).hexdigest())
"""


@pytest.mark.parametrize("solver", ["gd", "newton"])
def test_fresh_processes_give_the_same_bits(dataset, solver):
    """Nothing may depend on where the allocator puts a buffer (BLAS kernels can sum differently
    on differently aligned memory), so separate processes must agree bit for bit."""
    import subprocess
    import sys

    path = dataset(60_000, 12, 7_000)
    digests = {
        subprocess.run(
            [sys.executable, "-c", FRESH_PROCESS_FIT, path, solver],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for _ in range(4)
    }
    assert len(digests) == 1


@pytest.fixture(scope="module")
def weighted_data(tmp_path_factory):
    """A 3-class and a 2-class dataset, each with an array of sample weights 'w'."""
    from tests.test_solvers import make_problem, write

    rng = np.random.default_rng(8)
    root = tmp_path_factory.mktemp("weighted")
    paths = {}
    for classes in (2, 3):
        X, y = make_problem(rng, m=900, classes=classes)
        s = rng.uniform(0.2, 3.0, len(y))
        paths[classes] = write(root / f"{classes}.zarr", X, y, sample_weight=s, chunk=97)
    return paths


WEIGHTED_FITS = {
    "multinomial-lbfgs": (3, {"solver": "lbfgs", "max_iter": 6}),
    "multinomial-newton-l1": (3, {"solver": "newton", "C": 0.1, "l1_ratio": 0.5, "max_iter": 3}),
    "binary-gd": (2, {"solver": "gd", "standardize": True, "max_iter": 5}),
}


@pytest.fixture(scope="module")
def one_worker():
    """A LocalCluster of 1 worker process."""
    with scheduler(workers=1) as client:
        yield client


@pytest.mark.parametrize("case", WEIGHTED_FITS)
def test_multinomial_and_weighted_fits_are_bit_identical_on_every_scheduler(
    weighted_data, cluster, one_worker, case
):
    classes, params = WEIGHTED_FITS[case]
    path = weighted_data[classes]
    params = {**params, "class_weight": "balanced", "tol": 0, "cache_size": 0}

    def weighted_fit():
        return dlr.LogisticRegression(**params).fit(path, sample_weight="w")

    results = {}
    with dask.config.set(scheduler="sync"):
        results["sync"] = weighted_fit()
    with dask.config.set(scheduler="threads", num_workers=2):
        results["threads"] = weighted_fit()
    with dask.config.set(scheduler=cluster.get):
        results["2 processes"] = weighted_fit()
    with dask.config.set(scheduler=one_worker.get):
        results["1 process"] = weighted_fit()
    assert results["sync"].coef_.shape[0] == (3 if classes == 3 else 1)
    for name, model in results.items():
        np.testing.assert_array_equal(model.coef_, results["sync"].coef_, err_msg=name)
        np.testing.assert_array_equal(model.intercept_, results["sync"].intercept_, err_msg=name)
        np.testing.assert_array_equal(model.loss_history_, results["sync"].loss_history_)
