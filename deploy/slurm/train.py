"""Train with dlr on a SLURM cluster: dask workers as SLURM jobs (dask-jobqueue), then `dlr train`.

Run it in a batch job (see train.sbatch), or wherever long-running processes may run:

    python deploy/slurm/train.py /shared/data.zarr /shared/models/model --jobs 4

The dask scheduler runs in this process and each worker job runs ``--processes`` dask worker
processes on a compute node, from the same Python environment (it must be on a filesystem every
node mounts). So must the data — or it is on object storage — which ``dlr train`` checks on every
worker before it starts.
"""

import argparse
import subprocess
import sys


def make_cluster(
    *,
    cores: int = 8,
    processes: int = 2,
    memory: str = "32GB",
    walltime: str = "04:00:00",
    queue: str | None = None,
    account: str | None = None,
    interface: str | None = None,
    **options,
):
    """A ``dask_jobqueue.SLURMCluster`` whose jobs each run ``processes`` workers sharing
    ``cores`` cores and ``memory``; ``interface`` is the network interface the processes talk
    over (e.g. ``ib0``), ``options`` go to ``SLURMCluster`` as they are."""
    from dask_jobqueue import SLURMCluster

    return SLURMCluster(
        cores=cores,
        processes=processes,
        memory=memory,
        walltime=walltime,
        queue=queue,
        account=account,
        interface=interface,
        job_name="dlr-worker",
        python=sys.executable,
        local_directory="$TMPDIR",
        **options,
    )


def train_command(data: str, model: str, scheduler_address: str) -> list[str]:
    """The ``dlr train`` command line this script runs against the cluster."""
    return [
        "dlr",
        "train",
        data,
        "--model",
        model,
        "--scheduler",
        scheduler_address,
        "--learning-rate",
        "1.0",
        "--max-iter",
        "200",
        "--tol",
        "1e-6",
        "--overwrite",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="dataset path on a shared filesystem, or an s3:// URL")
    parser.add_argument("model", help="model directory to write (on a shared filesystem)")
    parser.add_argument("--jobs", type=int, default=4, help="SLURM jobs of workers")
    parser.add_argument("--cores", type=int, default=8, help="cores per job")
    parser.add_argument("--processes", type=int, default=2, help="worker processes per job")
    parser.add_argument("--memory", default="32GB", help="memory per job")
    parser.add_argument("--walltime", default="04:00:00", help="time limit of each job")
    parser.add_argument("--queue", help="SLURM partition")
    parser.add_argument("--account", help="SLURM account")
    parser.add_argument("--interface", help="network interface, e.g. ib0")
    args = parser.parse_args(argv)

    from distributed import Client

    with make_cluster(
        cores=args.cores,
        processes=args.processes,
        memory=args.memory,
        walltime=args.walltime,
        queue=args.queue,
        account=args.account,
        interface=args.interface,
    ) as cluster:
        cluster.scale(jobs=args.jobs)
        with Client(cluster) as client:
            print(f"waiting for the first worker job to start ({cluster.scheduler_address})")
            client.wait_for_workers(1)  # as long as the queue takes; dlr waits 60 s at most
        command = train_command(args.data, args.model, cluster.scheduler_address)
        return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
