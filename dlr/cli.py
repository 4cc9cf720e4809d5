"""The ``dlr`` command line: make-data, train, predict, evaluate, info, demo, cluster.

Errors a user can fix are printed as one line on stderr with exit status 1, never a traceback.

The group is also ``dask dlr`` (entry point group ``dask_cli``): dask imports this module each
time any ``dask`` command starts, so it imports only click; each command imports what it needs.
"""

import functools
import json
import logging
import os
import sys
import warnings
from contextlib import contextmanager

import click

from dlr._version import __version__
from dlr.errors import DlrError

LAYOUTS = ("samples-first", "features-first")


def _verbosity(ctx, param, value) -> None:
    """-q: warnings and errors only; -v: also what dlr decided and why (debug records)."""
    if value:
        level = logging.WARNING if param.name == "quiet" else logging.DEBUG
        logging.getLogger("dlr").setLevel(level)


def _verbosity_options() -> list[click.Option]:
    return [
        click.Option(
            ["-q", "--quiet"],
            is_flag=True,
            expose_value=False,
            callback=_verbosity,
            help="only print results and errors.",
        ),
        click.Option(
            ["-v", "--verbose"],
            is_flag=True,
            expose_value=False,
            callback=_verbosity,
            help="also print what dlr chose and why (cache budget...).",
        ),
    ]


class DlrGroup(click.Group):
    """Turns dlr's own errors into one-line messages and a non-zero exit; gives every command
    the -q and -v options, which may also come before the command's name."""

    def add_command(self, cmd, name=None):
        cmd.params.extend(_verbosity_options())
        super().add_command(cmd, name)

    def invoke(self, ctx):
        from sklearn.exceptions import ConvergenceWarning  # here, not at import: it takes a second

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                try:
                    return super().invoke(ctx)
                finally:
                    for w in caught:
                        click.echo(f"dlr: warning: {w.message}", err=True)
        except DlrError as e:
            click.echo(f"dlr: error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt as e:
            resume = getattr(e, "dlr_resume", None)
            click.echo(
                "dlr: interrupted; nothing was published" + (f"; {resume}" if resume else ""),
                err=True,
            )
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
tls_options = [
    click.option("--tls-ca-file", metavar="PEM", help="CA certificate(s) of a TLS cluster."),
    click.option("--tls-cert", metavar="PEM", help="certificate for TLS."),
    click.option(
        "--tls-key", metavar="PEM", help="private key for TLS (if not in the certificate file)."
    ),
]
scheduler_options = [
    click.option(
        "--scheduler",
        metavar="ADDRESS",
        help="dask scheduler to use, e.g. tcp://10.0.0.5:8786 "
        "(default: $DASK_SCHEDULER_ADDRESS, else local threads).",
    ),
    click.option(
        "--scheduler-file",
        metavar="FILE",
        help="read the scheduler address from FILE (written by dask scheduler --scheduler-file "
        "or dlr cluster).",
    ),
    click.option(
        "--workers",
        type=int,
        metavar="N",
        help="start a local cluster of N worker processes on 127.0.0.1 for this run.",
    ),
    *tls_options,
]


def with_scheduler(f):
    """Add the scheduler options to a command, which receives them as one ``scheduling`` dict
    of keyword arguments for :func:`dlr.scheduling.scheduler`."""

    @functools.wraps(f)
    def command(
        *args, scheduler, scheduler_file, workers, tls_ca_file, tls_cert, tls_key, **kwargs
    ):
        from dlr.scheduling import tls_security

        scheduling = {
            "address": scheduler,
            "scheduler_file": scheduler_file,
            "workers": workers,
            "security": tls_security(tls_ca_file, tls_cert, tls_key),
        }
        return f(*args, scheduling=scheduling, **kwargs)

    for option in reversed(scheduler_options):
        command = option(command)
    return command


def with_arrays(*, labels: bool = True):
    """Add ``--x`` (and, with ``labels``, ``--y``): the names of the feature and label arrays
    in DATA, passed to the command as ``x_name`` and ``y_name``."""

    def add(f):
        if labels:
            f = click.option(
                "--y", "y_name", default="y", show_default=True, help="label array in DATA."
            )(f)
        return click.option(
            "--x", "x_name", default="X", show_default=True, help="feature array in DATA."
        )(f)

    return add


def with_tls(f):
    """Add the --tls-* options to a command."""
    for option in reversed(tls_options):
        f = option(f)
    return f


@contextmanager
def _scheduler_for(scheduling: dict, data: str, storage_options: dict | None, arrays: tuple):
    """The scheduler the options chose, once its workers (if any) are known to see DATA."""
    from dlr.preflight import check_workers
    from dlr.scheduling import scheduler

    with scheduler(**scheduling) as client:
        if client is not None:
            check_workers(client, data, storage_options, arrays=arrays)
        yield client


@click.group("dlr", cls=DlrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dlr")
@click.option("-q", "--quiet", is_flag=True, help="only print results and errors.")
@click.option("-v", "--verbose", is_flag=True, help="also print what dlr chose and why.")
def main(quiet, verbose):
    """Out-of-core logistic regression over chunked zarr data, computed by dask."""
    logging.basicConfig(
        level=logging.WARNING,  # other libraries (s3fs, botocore...): warnings only
        format="%(asctime)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.getLogger("dlr").setLevel(level)


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

    try:
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
    except (FileNotFoundError, PermissionError) as e:  # e.g. a bucket that does not exist
        raise DlrError(f"cannot write '{out}': {e}") from None
    n_chunks = -(-n_samples // chunk_samples)
    click.echo(
        f"wrote {out}: {n_samples} samples × {n_features} features, {dtype}, {layout}, "
        f"{n_chunks} chunks of {chunk_samples} samples"
    )


def _penalty(value: str) -> float:
    try:
        return float(value)  # accepts "inf"
    except ValueError:
        raise click.BadParameter(f"expected a number or 'inf', got {value!r}") from None


def _class_weight(value: str | None):
    """``balanced`` or ``LABEL=WEIGHT,LABEL=WEIGHT`` (integer labels)."""
    if value is None or value == "balanced":
        return value
    weights = {}
    for pair in value.split(","):
        label, sep, weight = pair.partition("=")
        try:
            weights[int(label)] = float(weight)
        except ValueError:
            raise DlrError(
                f"--class-weight expects 'balanced' or LABEL=WEIGHT pairs such as 0=1,1=5; "
                f"got {value!r}"
            ) from None
        if not sep:
            raise DlrError(f"--class-weight expects LABEL=WEIGHT pairs, got {pair!r}")
    return weights


@main.command()
@click.argument("data")
@click.option("--model", "model_path", required=True, help="directory to write the model to.")
@click.option(
    "--solver",
    type=click.Choice(["auto", "newton", "lbfgs", "gd"]),
    default="auto",
    show_default=True,
    help="auto: newton for up to 20 parameters, else lbfgs; gd: the seed's descent.",
)
@click.option(
    "--C",
    "C",
    default="1.0",
    show_default=True,
    type=_penalty,
    help="inverse regularization strength; inf for none.",
)
@click.option(
    "--l1-ratio",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="0: L2 penalty, 1: L1, in between: elastic net.",
)
@click.option("--no-intercept", is_flag=True, help="fit no intercept.")
@click.option(
    "--standardize",
    is_flag=True,
    help="train on standardized features (coefficients still on the original scale).",
)
@click.option("--class-weight", metavar="balanced|L=W,...", help="per-class weights.")
@click.option("--sample-weight", metavar="NAME", help="array of sample weights in DATA.")
@click.option(
    "--learning-rate", type=float, default=0.1, show_default=True, help="gd: the step size."
)
@click.option("--line-search", is_flag=True, help="gd: backtracking (Armijo) step size.")
@click.option("--nesterov", is_flag=True, help="gd: Nesterov momentum.")
@click.option(
    "--memory", type=int, default=10, show_default=True, help="lbfgs: correction pairs kept."
)
@click.option("--max-iter", type=int, default=100, show_default=True)
@click.option(
    "--tol",
    type=float,
    default=1e-4,
    show_default=True,
    help="newton/lbfgs: stop when max|gradient| ≤ tol; gd: when the loss changes by less than "
    "this, relatively (0 runs max-iter).",
)
@click.option("--init", "init_model", metavar="MODEL", help="start from this model's weights.")
@click.option("--validation", metavar="DATA", help="validation dataset, scored every iteration.")
@click.option(
    "--early-stopping",
    is_flag=True,
    help="stop when the validation loss stops improving; keep the best weights.",
)
@click.option(
    "--n-iter-no-change",
    type=int,
    default=5,
    show_default=True,
    help="patience of --early-stopping, in iterations.",
)
@click.option("--plot", metavar="PNG", help="write the loss curve to this image.")
@click.option(
    "--checkpoint",
    metavar="DIR",
    help="save the complete solver state here (a directory or object-store URL).",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    metavar="N",
    help="checkpoint every N iterations (default: every iteration).",
)
@click.option(
    "--checkpoint-seconds",
    type=click.FloatRange(min=0, min_open=True),
    metavar="T",
    help="checkpoint at most T seconds apart.",
)
@click.option("--keep-checkpoints", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--resume",
    is_flag=True,
    help="continue from the newest intact checkpoint in --checkpoint (bit-identical).",
)
@click.option(
    "--cache-size",
    default="auto",
    show_default=True,
    help="decoded chunks kept in memory: auto, 0 (stream every pass), or e.g. 512MB.",
)
@with_arrays()
@click.option("--overwrite", is_flag=True, help="replace the model directory if it exists.")
@with_scheduler
@storage_option
def train(
    data,
    model_path,
    C,
    no_intercept,
    sample_weight,
    init_model,
    validation,
    plot,
    checkpoint,
    checkpoint_every,
    checkpoint_seconds,
    keep_checkpoints,
    resume,
    x_name,
    y_name,
    overwrite,
    scheduling,
    storage_option,
    **params,
):
    """Train on the dataset DATA and write the model to --model (a directory or URL)."""
    from dlr.estimator import LogisticRegression
    from dlr.model_io import model_exists

    options = _storage_options(storage_option)
    _refuse_overlap(model_path, {"the dataset": data, "the validation dataset": validation})
    if model_exists(model_path, options) and not overwrite:
        raise DlrError(f"model '{model_path}' exists; choose another path or pass --overwrite")
    if plot:
        from dlr.plotting import require_matplotlib

        require_matplotlib()
    params["class_weight"] = _class_weight(params["class_weight"])
    model = LogisticRegression(C=C, fit_intercept=not no_intercept, verbose=True, **params)
    with _scheduler_for(scheduling, data, options, (x_name, y_name)):
        model.fit(
            data,
            sample_weight=sample_weight,
            validation_data=validation,
            init=init_model,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            checkpoint_seconds=checkpoint_seconds,
            keep_checkpoints=keep_checkpoints,
            resume=resume,
            x_name=x_name,
            y_name=y_name,
            storage_options=options,
        )
    model.save(model_path, overwrite=overwrite, storage_options=options)
    if plot:
        from dlr.plotting import plot_loss

        plot_loss(model, plot)
    status = "converged" if model.converged_ else "not converged"
    click.echo(
        f"trained on {data}: solver {model.solver_}, {model.n_iter_[0]} iterations ({status}), "
        f"{model.n_passes_} passes over the data, final loss {model.loss_history_[-1]:.6g}, "
        f"{model.fit_seconds_:.2f}s; model written to {model_path}"
    )


def _normalized(path: str) -> str:
    from dlr.atomic import is_local, local_path

    if is_local(path):
        return os.path.realpath(local_path(path))
    return path.rstrip("/")


def _refuse_overlap(model_path: str, datasets: dict) -> None:
    """Refuse a model path that is a dataset, inside one, or holds one: writing the model
    (with --overwrite, replacing the directory) would destroy the data."""
    model = _normalized(model_path)
    for what, data in datasets.items():
        if data is None:
            continue
        other = _normalized(data)
        if model == other or model.startswith(other + "/") or other.startswith(model + "/"):
            where = "is" if model == other else "is inside" if len(model) > len(other) else "holds"
            raise DlrError(
                f"--model '{model_path}' {where} {what} '{data}': writing the model there would "
                "destroy the data; choose a model path outside it"
            )


def _model_and_data(model_path: str, data: str, options: dict | None, *, x: str, y: str | None):
    """A saved model and the source of DATA it applies to (feature counts checked)."""
    from dlr.dataset import open_dataset
    from dlr.estimator import load
    from dlr.sources import from_dataset

    model = load(model_path, options)
    source = from_dataset(open_dataset(data, x=x, y=y, storage_options=options))
    model._check_features(source)
    return model, source


@main.command()
@click.argument("model_path", metavar="MODEL")
@click.argument("data")
@click.option(
    "--out",
    required=True,
    help="zarr group for the probabilities, which xarray.open_zarr reads: variable "
    "'probability' chunked like DATA, (m,) P(second class) for two classes, (m, K) with a "
    "'class' coordinate otherwise.",
)
@with_arrays(labels=False)
@click.option("--overwrite", is_flag=True, help="replace OUT if it exists.")
@with_scheduler
@storage_option
def predict(model_path, data, out, x_name, overwrite, scheduling, storage_option):
    """Write the model's probabilities for every sample of DATA to --out."""
    import numpy as np

    from dlr import scoring

    options = _storage_options(storage_option)
    model, source = _model_and_data(model_path, data, options, x=x_name, y=None)
    classes = np.asarray(model.classes_)
    with _scheduler_for(scheduling, data, options, (x_name,)):
        scoring.write_probabilities(
            source,
            model.theta_,
            out,
            classes=classes,
            overwrite=overwrite,
            storage_options=options,
            attributes={"model": str(model_path), "data": source.fingerprint},
        )
    what = f"P(y={classes[1]})" if len(classes) == 2 else f"P(y=class), classes {classes.tolist()}"
    click.echo(f"wrote {out}: {scoring.PROBABILITY} = {what} for {source.n_samples} samples")


@main.command()
@click.argument("model_path", metavar="MODEL")
@click.argument("data")
@with_arrays()
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON.")
@with_scheduler
@storage_option
def evaluate(model_path, data, x_name, y_name, as_json, scheduling, storage_option):
    """Log-loss, accuracy, ROC AUC, confusion matrix and calibration of MODEL on DATA."""
    import numpy as np

    from dlr import scoring

    options = _storage_options(storage_option)
    model, source = _model_and_data(model_path, data, options, x=x_name, y=y_name)
    with _scheduler_for(scheduling, data, options, (x_name, y_name)):
        metrics = scoring.evaluate(source, model.theta_, np.asarray(model.classes_))
    if as_json:
        click.echo(json.dumps(metrics))
        return
    click.echo(scoring.report(metrics))


@main.command()
@click.argument("model_path", metavar="MODEL")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx"]),
    default="onnx",
    show_default=True,
    help="file format.",
)
@click.option("--out", required=True, help="file to write (atomically).")
@click.option("--overwrite", is_flag=True, help="replace OUT if it exists.")
@storage_option
def export(model_path, fmt, out, overwrite, storage_option):
    """Write MODEL as an ONNX graph: input X (N, n_features) float32, outputs label and
    probabilities (N, K)."""
    from dlr.estimator import load
    from dlr.export import OPSET, export_onnx

    model = load(model_path, _storage_options(storage_option))
    export_onnx(model, out, overwrite=overwrite)
    click.echo(
        f"wrote {out}: ONNX (opset {OPSET}) of {model_path}, "
        f"{len(model.classes_)} classes, {model.n_features_in_} features"
    )


@main.command()
@click.argument("data")
@with_arrays()
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


@main.command()
@click.option("--workers", "n_workers", type=int, default=2, show_default=True)
@click.option("--threads-per-worker", type=int, default=1, show_default=True)
@click.option(
    "--memory-limit",
    default="auto",
    show_default=True,
    help="per worker: auto, 0 (no limit), or a size such as 4GB.",
)
@click.option(
    "--port", type=int, default=8786, show_default=True, help="scheduler port (0: any free port)."
)
@click.option(
    "--scheduler-file",
    default=None,
    metavar="FILE",
    help="where to write the scheduler file (default: a temporary file); removed on exit.",
)
@with_tls
def cluster(
    n_workers,
    threads_per_worker,
    memory_limit,
    port,
    scheduler_file,
    tls_ca_file,
    tls_cert,
    tls_key,
):
    """Run a dask scheduler and N worker processes on 127.0.0.1 until Ctrl-C or SIGTERM."""
    from dlr.cluster import local_cluster, run_until_stopped
    from dlr.scheduling import tls_security

    files = (tls_ca_file, tls_cert, tls_key)
    tls = files if tls_security(*files) else None  # checks the files before starting anything
    with local_cluster(
        n_workers,
        threads_per_worker=threads_per_worker,
        memory_limit=memory_limit,
        port=port,
        scheduler_file=scheduler_file,
        tls=tls,
    ) as running:
        use = f"dlr train DATA --model MODEL --scheduler-file {running.scheduler_file}"
        if tls:
            use += f" --tls-ca-file {tls_ca_file} --tls-cert {tls_cert}"
            use += f" --tls-key {tls_key}" if tls_key else ""
        click.echo(f"dask scheduler at {running.address}, {n_workers} workers, on 127.0.0.1 only")
        click.echo(f"scheduler file: {running.scheduler_file}")
        click.echo(f"use it with:    {use}")
        click.echo(f"logs:           {running.log_dir} (removed on exit)")
        click.echo("stop it with Ctrl-C")
        sys.stdout.flush()
        stopped_by = run_until_stopped(running)
    click.echo(f"cluster stopped ({stopped_by})")


def run_command(args: list[str]) -> int:
    """Run ``dlr ARGS`` in this process and return its exit status (for adapters such as the
    Prefect flow in pipelines/): 0, a command's own status (``dlr retrain``: 3, 4, 5), or 1
    for an error, which has been printed as one line."""
    try:
        return main.main(list(args), prog_name="dlr", standalone_mode=False) or 0
    except SystemExit as e:
        return int(e.code or 0)


from dlr.cli_registry import ingest, registry  # noqa: E402 (it uses the options above)
from dlr.cli_retrain import demo_retrain, retrain  # noqa: E402 (reuses the options above)

main.add_command(ingest)
main.add_command(registry)
main.add_command(retrain)
main.add_command(demo_retrain)
