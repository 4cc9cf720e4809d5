"""Nightly retraining as a Prefect flow with a cron deployment.

Needs the ``prefect`` extra (``pip install -e '.[prefect]'`` in a checkout,
``pip install 'dlr-logistic[prefect]'`` from an index).

    python pipelines/prefect_flow.py      # serves the deployment "nightly": 02:00 UTC every day

The flow derives the run key from the flow run's *scheduled* time, so a task retry — or a rerun
of the same flow run — passes the same key: ``dlr retrain`` then resumes that run from its
checkpoint, or only reports its earlier outcome; it never trains or publishes twice. All the
logic is in ``dlr``; this file only maps the run key and the exit status.
"""

from prefect import flow, task
from prefect.runtime import flow_run

from dlr.cli import run_command
from dlr.retrain import ERROR, parse_period, run_key_for


@task(retries=2, retry_delay_seconds=60)
def retrain_task(args: list[str], run_key: str) -> int:
    """``dlr retrain ARGS --run-key RUN_KEY``; an error raises, so Prefect retries it."""
    code = run_command(["retrain", *args, "--run-key", run_key])
    if code == ERROR:
        raise RuntimeError(f"dlr retrain failed (run key {run_key}); a retry resumes the run")
    return code  # 0 promoted, 3 rejected, 4 nothing new, 5 another run holds the lock


@flow(name="dlr-retrain")
def retrain_flow(
    config: str = "pipelines/retrain.toml", args: list[str] | None = None, period: str = "1d"
) -> int:
    """One scheduled run: ``dlr retrain --config CONFIG ARGS`` with the run key of this flow
    run's scheduled time (truncated to ``period``)."""
    key = run_key_for(flow_run.scheduled_start_time, parse_period(period))
    return retrain_task(["--config", config, *(args or [])], key)


if __name__ == "__main__":
    retrain_flow.serve(name="nightly", cron="0 2 * * *")
