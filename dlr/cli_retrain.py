"""``dlr retrain``: one scheduled retraining run (see :mod:`dlr.retrain`), options also from TOML.

Every setting can come from ``--config FILE`` (a flat TOML table whose keys are the option
names, with ``-`` or ``_``, e.g. ``max-iter = 200``, ``gate = ["roc_auc>=0.7"]``); options given
on the command line win. The training options are the very ``click`` options of ``dlr train``.
"""

import copy
import tomllib

import click

from dlr.cli import (
    _class_weight,
    _scheduler_for,
    _storage_options,
    storage_option,
    train,
    with_scheduler,
)
from dlr.errors import DlrError

#: The ``dlr train`` options that apply to a retraining run (the data, the model path, the
#: starting point and the checkpoint location are the registry's).
TRAIN_OPTIONS = (
    "solver",
    "C",
    "l1_ratio",
    "no_intercept",
    "standardize",
    "class_weight",
    "learning_rate",
    "line_search",
    "nesterov",
    "memory",
    "max_iter",
    "tol",
    "checkpoint_every",
    "checkpoint_seconds",
    "keep_checkpoints",
    "cache_size",
)
FIT_OPTIONS = ("checkpoint_every", "checkpoint_seconds", "keep_checkpoints")


def with_train_options(f):
    """Attach copies of ``dlr train``'s own options (same names, types, defaults, help)."""
    params = [copy.copy(p) for p in train.params if p.name in TRAIN_OPTIONS]
    f.__click_params__ = getattr(f, "__click_params__", []) + params[::-1]
    return f


def _load_config(ctx: click.Context, param, path: str | None):
    """Make the TOML file's settings the defaults of this invocation (flags still win)."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise DlrError(f"cannot read config '{path}': {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise DlrError(f"config '{path}' is not valid TOML: {e}") from None
    names = {  # option name without "--", with "_" for "-" -> the parameter
        opt.lstrip("-").replace("-", "_"): p.name
        for p in ctx.command.params
        if p.name != "config"
        for opt in p.opts
        if opt.startswith("--")
    }
    defaults = {}
    for key, value in doc.items():
        name = names.get(key.replace("-", "_"))
        if name is None:
            raise DlrError(
                f"config '{path}': unknown setting {key!r}; the settings are the options of "
                "`dlr retrain --help` without the leading --"
            )
        defaults[name] = value
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return path


def _refuse_drift_bins(value) -> None:
    """The PSI bins were a setting of each run; they belong to the registry now."""
    if value is not None:
        raise DlrError(
            "drift-bins is not a `dlr retrain` setting: the PSI bins belong to the registry, "
            "fixed at its first ingest (`dlr ingest --drift-bins N`)"
        )


@click.command("retrain")
@click.option(
    "--config",
    metavar="FILE",
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help="TOML file of settings (keys: these option names); command-line options win.",
)
@click.option("--registry", "registry_url", required=True, metavar="REG", help="the registry.")
@click.option(
    "--holdout",
    required=True,
    metavar="DATA",
    help="the pinned holdout dataset (its fingerprint is recorded at first use).",
)
@click.option(
    "--repin-holdout", is_flag=True, help="pin --holdout even if another holdout is pinned."
)
@click.option(
    "--gate",
    multiple=True,
    metavar="EXPR",
    help="a promotion threshold, e.g. 'roc_auc>=0.70', 'log_loss<=champion+0.5%', "
    "'roc_auc>=champion-0.002', 'psi<=0.25' (repeatable; at least one metric threshold).",
)
@click.option(
    "--promote",
    type=click.Choice(["auto", "manual"]),
    default="auto",
    show_default=True,
    help="auto: a passing candidate becomes champion; manual: it only becomes challenger.",
)
@click.option(
    "--run-key",
    metavar="KEY",
    help="name of this run; the same key again resumes or reports it (default: the scheduled "
    "time truncated to --period, e.g. 20261201T000000Z).",
)
@click.option(
    "--scheduled-time",
    metavar="ISO",
    help="the run's scheduled time, for the default run key (default: now, UTC).",
)
@click.option(
    "--period",
    default="1d",
    show_default=True,
    metavar="P",
    help="the schedule's period (30m, 1h, 1d, 1w): runs within one period share a run key.",
)
@click.option(
    "--window-last", type=click.IntRange(min=1), metavar="N", help="train on the last N spans."
)
@click.option(
    "--window-within",
    metavar="P",
    help="train on the spans committed within this period (e.g. 30d).",
)
@click.option(
    "--drift-bins",
    type=int,
    hidden=True,
    expose_value=False,
    callback=lambda ctx, param, value: _refuse_drift_bins(value),
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="seconds the registry lease lasts unless renewed (renewed every third of it).",
)
@with_train_options
@with_scheduler
@storage_option
def retrain(
    registry_url,
    holdout,
    repin_holdout,
    gate,
    promote,
    run_key,
    scheduled_time,
    period,
    window_last,
    window_within,
    lease_ttl,
    no_intercept,
    class_weight,
    scheduling,
    storage_option,
    **params,
):
    """Retrain the registry's champion on the committed spans and promote it if the gate passes.

    Exit status: 0 promoted (or challenger set with --promote manual), 3 rejected by the gate,
    4 nothing new to train on, 5 another run holds the registry lock, 1 error.
    """
    from dlr.retrain import RetrainConfig, parse_period, parse_time, print_outcome, run_key_for
    from dlr.retrain import retrain as run

    options = _storage_options(storage_option)
    if run_key is None:
        when = parse_time(scheduled_time) if scheduled_time else None
        run_key = run_key_for(when, parse_period(period))
    fit_options = {k: params.pop(k) for k in FIT_OPTIONS}
    fit_options = {k: v for k, v in fit_options.items() if v is not None}
    config = RetrainConfig(
        holdout=holdout,
        gate=tuple(gate),
        promote=promote,
        repin_holdout=repin_holdout,
        params={
            **params,
            "fit_intercept": not no_intercept,
            "class_weight": _class_weight(class_weight),
            "verbose": True,
        },
        fit_options=fit_options,
        window_last=window_last,
        window_within=parse_period(window_within) if window_within else None,
        lease_ttl=lease_ttl,
    )
    with _scheduler_for(scheduling, holdout, options, ("X", "y")):
        outcome = run(registry_url, config, run_key=run_key, storage_options=options,
                      echo=click.echo)  # fmt: skip
    print_outcome(outcome, click.echo)
    click.get_current_context().exit(outcome.exit_code)


@click.command("demo-retrain")
@click.option("--dir", "directory", default=None, help="keep the registry here (default: temp).")
@click.option("--rows", type=click.IntRange(min=100), default=20_000, show_default=True)
@click.option("--features", "n_features", type=click.IntRange(min=1), default=8, show_default=True)
def demo_retrain(directory, rows, n_features):
    """Four simulated days of ingest and scheduled retraining, printing each decision."""
    from dlr.demo_retrain import run_retrain_demo

    run_retrain_demo(directory, rows=rows, n_features=n_features, echo=click.echo)
