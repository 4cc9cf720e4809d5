"""The ``dlr`` command line: make-data, train, predict, evaluate, info, demo.

Errors a user can fix are printed as one line on stderr with exit status 1, never a traceback.
"""

import json
import logging
import sys

import click

from dlr import __version__
from dlr.errors import DlrError

LAYOUTS = ("samples-first", "features-first")


class DlrGroup(click.Group):
    """Turns dlr's own errors into one-line messages and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DlrError as e:
            click.echo(f"dlr: error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("dlr: interrupted; nothing was published", err=True)
            sys.exit(130)


def _storage_options(pairs: tuple[str, ...]) -> dict | None:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DlrError(f"--storage-option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options or None


storage_option = click.option(
    "--storage-option",
    "storage_option",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec storage option for object-store URLs (repeatable; values parsed as JSON "
    "if possible).",
)
scheduler_options = [
    click.option(
        "--scheduler",
        metavar="ADDRESS",
        help="dask scheduler to use, e.g. tcp://10.0.0.5:8786 "
        "(default: $DASK_SCHEDULER_ADDRESS, else local threads).",
    ),
    click.option(
        "--workers",
        type=int,
        metavar="N",
        help="start a local cluster of N worker processes on 127.0.0.1 for this run.",
    ),
]


def with_scheduler(f):
    for option in reversed(scheduler_options):
        f = option(f)
    return f


@click.group(cls=DlrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dlr")
@click.option("-q", "--quiet", is_flag=True, help="only print results and errors.")
def main(quiet):
    """Out-of-core logistic regression over chunked zarr data, computed by dask."""
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
        stream=sys.stderr,
    )


@main.command("make-data")
@click.argument("out")
@click.option("--samples", "n_samples", type=int, default=100_000, show_default=True)
@click.option("--features", "n_features", type=int, default=16, show_default=True)
@click.option(
    "--chunk-samples",
    type=int,
    default=16_384,
    show_default=True,
    help="samples per chunk (the last chunk may be smaller).",
)
@click.option(
    "--layout",
    type=click.Choice(LAYOUTS),
    default="samples-first",
    show_default=True,
    help="samples-first stores X as (m, n); features-first as (n, m), the seed's layout.",
)
@click.option(
    "--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="replace OUT if it exists.")
@storage_option
def make_data(
    out, n_samples, n_features, chunk_samples, layout, dtype, seed, overwrite, storage_option
):
    """Write a synthetic dataset with known true weights to OUT, chunk by chunk."""
    from dlr.synthetic import make_dataset

    make_dataset(
        out,
        n_samples,
        n_features,
        chunk_samples=chunk_samples,
        samples_first=layout == "samples-first",
        dtype=dtype,
        seed=seed,
        overwrite=overwrite,
        storage_options=_storage_options(storage_option),
    )
    n_chunks = -(-n_samples // chunk_samples)
    click.echo(
        f"wrote {out}: {n_samples} samples × {n_features} features, {dtype}, {layout}, "
        f"{n_chunks} chunks of {chunk_samples} samples"
    )


@main.command()
@click.argument("data")
@click.option("--model", "model_path", required=True, help="directory to write the model to.")
@click.option("--solver", type=click.Choice(["gd"]), default="gd", show_default=True)
@click.option("--learning-rate", type=float, default=0.1, show_default=True)
@click.option("--max-iter", type=int, default=100, show_default=True)
@click.option(
    "--tol",
    type=float,
    default=1e-4,
    show_default=True,
    help="stop when the loss changes by less than this, relatively; 0 runs max-iter.",
)
@click.option(
    "--cache-size",
    default="auto",
    show_default=True,
    help="decoded chunks kept in memory: auto, 0 (stream every pass), or e.g. 512MB.",
)
@click.option("--x", "x_name", default="X", show_default=True, help="feature array in DATA.")
@click.option("--y", "y_name", default="y", show_default=True, help="label array in DATA.")
@click.option("--overwrite", is_flag=True, help="replace the model directory if it exists.")
@with_scheduler
@storage_option
def train(
    data,
    model_path,
    solver,
    learning_rate,
    max_iter,
    tol,
    cache_size,
    x_name,
    y_name,
    overwrite,
    scheduler,
    workers,
    storage_option,
):
    """Train on the dataset DATA and write the model to --model."""
    import os

    from dlr.estimator import LogisticRegression
    from dlr.scheduling import scheduler as use_scheduler

    if os.path.exists(model_path) and not overwrite:
        raise DlrError(f"model '{model_path}' exists; choose another path or pass --overwrite")
    model = LogisticRegression(
        solver=solver,
        learning_rate=learning_rate,
        max_iter=max_iter,
        tol=tol,
        cache_size=cache_size,
        verbose=True,
    )
    with use_scheduler(scheduler, workers):
        model.fit(
            data, x_name=x_name, y_name=y_name, storage_options=_storage_options(storage_option)
        )
    model.save(model_path, overwrite=overwrite)
    status = "converged" if model.converged_ else "stopped at max-iter"
    click.echo(
        f"trained on {data}: {model.n_iter_} iterations ({status}), final loss "
        f"{model.loss_history_[-1]:.6g}, {model.fit_seconds_:.2f}s; model written to "
        f"{model_path}"
    )


@main.command()
@click.argument("model_path", metavar="MODEL")
@click.argument("data")
@click.option("--out", required=True, help="zarr array to write P(y=1) to, chunked like DATA.")
@click.option("--x", "x_name", default="X", show_default=True, help="feature array in DATA.")
@click.option("--overwrite", is_flag=True, help="replace OUT if it exists.")
@with_scheduler
@storage_option
def predict(model_path, data, out, x_name, overwrite, scheduler, workers, storage_option):
    """Write the model's probabilities for every sample of DATA to --out."""
    from dlr import scoring
    from dlr.dataset import open_dataset
    from dlr.estimator import load
    from dlr.scheduling import scheduler as use_scheduler
    from dlr.sources import from_dataset

    model = load(model_path)
    options = _storage_options(storage_option)
    source = from_dataset(open_dataset(data, x=x_name, y=None, storage_options=options))
    model._check_features(source)
    attrs = {"dlr": {"what": "P(y=1)", "model": str(model_path), "data": source.fingerprint}}
    with use_scheduler(scheduler, workers):
        scoring.write_probabilities(
            source,
            model.coef_[0],
            float(model.intercept_[0]),
            out,
            overwrite=overwrite,
            storage_options=options,
            attributes=attrs,
        )
    click.echo(f"wrote {out}: P(y=1) for {source.n_samples} samples")


@main.command()
@click.argument("model_path", metavar="MODEL")
@click.argument("data")
@click.option("--x", "x_name", default="X", show_default=True, help="feature array in DATA.")
@click.option("--y", "y_name", default="y", show_default=True, help="label array in DATA.")
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON.")
@with_scheduler
@storage_option
def evaluate(model_path, data, x_name, y_name, as_json, scheduler, workers, storage_option):
    """Log-loss, accuracy and ROC AUC of MODEL on the labelled dataset DATA."""
    from dlr import scoring
    from dlr.dataset import open_dataset
    from dlr.estimator import load
    from dlr.scheduling import scheduler as use_scheduler
    from dlr.sources import from_dataset

    model = load(model_path)
    source = from_dataset(
        open_dataset(data, x=x_name, y=y_name, storage_options=_storage_options(storage_option))
    )
    model._check_features(source)
    with use_scheduler(scheduler, workers):
        metrics = scoring.evaluate(source, model.coef_[0], float(model.intercept_[0]))
    if as_json:
        click.echo(json.dumps(metrics))
        return
    for key, value in metrics.items():
        click.echo(f"{key:10s} {value:.6g}" if isinstance(value, float) else f"{key:10s} {value}")


@main.command()
@click.argument("data")
@click.option("--x", "x_name", default="X", show_default=True)
@click.option("--y", "y_name", default="y", show_default=True)
@storage_option
def info(data, x_name, y_name, storage_option):
    """Describe the dataset DATA: layout, shape, chunks, codecs, attributes."""
    from dlr.dataset import describe, open_dataset

    ds = open_dataset(data, x=x_name, y=y_name, storage_options=_storage_options(storage_option))
    click.echo(describe(ds))


@main.command()
@click.option(
    "--dir",
    "directory",
    default=None,
    help="where to write the demo dataset and model (default: a temporary directory).",
)
@click.option("--samples", "n_samples", type=int, default=200_000, show_default=True)
@click.option("--features", "n_features", type=int, default=16, show_default=True)
@click.option("--chunk-samples", type=int, default=15_000, show_default=True)
@click.option("--max-iter", type=int, default=100, show_default=True)
@click.option("--learning-rate", type=float, default=1.0, show_default=True)
def demo(directory, n_samples, n_features, chunk_samples, max_iter, learning_rate):
    """Make a dataset, train on it out-of-core, and compare with the in-memory NumPy oracle."""
    from dlr.demo import run_demo

    run_demo(
        directory,
        n_samples=n_samples,
        n_features=n_features,
        chunk_samples=chunk_samples,
        max_iter=max_iter,
        learning_rate=learning_rate,
        echo=click.echo,
    )
