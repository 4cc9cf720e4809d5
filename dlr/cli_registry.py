"""``dlr ingest`` and ``dlr registry ...``: new batches in, versions and aliases managed.

Every command that changes the registry holds its lease (:mod:`dlr.lease`) while it does, so it
never interleaves with a retraining run or another command.
"""

import json
import os
from contextlib import contextmanager

import click

from dlr.cli import _storage_options, storage_option
from dlr.errors import DlrError
from dlr.lease import COMMAND_TTL, Lease, default_owner
from dlr.registry import Registry, whoami

lease_wait = click.option(
    "--lease-wait",
    type=float,
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="how long to wait for the registry lease if a run holds it.",
)


@click.command()
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option("--registry", "registry_url", required=True, metavar="REG", help="the registry.")
@click.option("--label", metavar="COLUMN", help="the label column (fixed at the first ingest).")
@click.option(
    "--features", metavar="COLUMNS", help="comma-separated feature columns (default: all others)."
)
@click.option("--sample-weight", metavar="COLUMN", help="a column of per-row sample weights.")
@click.option(
    "--holdout-fraction",
    type=float,
    default=0.1,
    show_default=True,
    help="share of each span's rows kept as its fresh holdout (chosen by row hash).",
)
@click.option("--chunk-samples", type=int, metavar="N", help="rows per chunk of the span.")
@click.option(
    "--drift-bins",
    type=click.IntRange(min=2),
    metavar="N",
    help="PSI bins per feature, over the range of the first ingest's rows (fixed at the "
    "first ingest; default 10).",
)
@lease_wait
@storage_option
def ingest(
    sources,
    registry_url,
    label,
    features,
    sample_weight,
    holdout_fraction,
    chunk_samples,
    drift_bins,
    lease_wait,
    storage_option,
):
    """Ingest SOURCE... (Parquet/CSV files or directories, .npy, .npz, zarr groups) into the
    registry REG as write-once spans, exactly once: content already committed changes nothing."""
    from dlr.spans import ingest as run

    options = _storage_options(storage_option)
    registry = Registry.create_or_open(registry_url, options)
    results = run(
        list(sources),
        registry,
        label=label,
        features=[f.strip() for f in features.split(",")] if features else None,
        sample_weight=sample_weight,
        holdout_fraction=holdout_fraction,
        chunk_samples=chunk_samples,
        drift_bins=drift_bins,
        storage_options=options,
        lease_wait=lease_wait,
    )
    for r in results:
        if r.created:
            click.echo(
                f"committed span {r.id} from {r.source}: {r.rows} rows ({r.train_rows} train, "
                f"{r.holdout_rows} fresh holdout)"
            )
        else:
            click.echo(
                f"span {r.id} from {r.source} is already committed (same content as "
                f"{r.duplicate_of}); nothing changed"
            )


@click.group()
def registry():
    """Inspect and manage a model registry (a directory or an object-store prefix)."""


def _open(url: str, storage_option) -> Registry:
    return Registry(url, _storage_options(storage_option))


@contextmanager
def _locked(reg: Registry, command: str, wait: float):
    with Lease.acquire(
        reg,
        owner=f"{default_owner()} {command}",
        run_key=f"cli-{os.getpid()}",
        ttl=COMMAND_TTL,
        wait=wait,
    ) as lease:
        reg.complete_history()  # of a change whose writer was killed before its event file
        yield lease


def _version_row(reg: Registry, info, aliases: dict[str, int]) -> dict:
    lineage = info.lineage
    metrics = lineage.get("metrics") or {}
    return {
        "version": info.version,
        "created_at": info.created_at,
        "aliases": sorted(a for a, v in aliases.items() if v == info.version),
        "decision": lineage.get("decision"),
        "reason": lineage.get("reason"),
        "metrics": metrics.get("pinned"),
        "fresh_metrics": metrics.get("fresh"),
        "spans": lineage.get("spans"),
        "parent": lineage.get("parent"),
        "run_key": lineage.get("run_key"),
        "url": info.url,
    }


@registry.command("list")
@click.argument("url", metavar="REG")
@click.option("--json", "as_json", is_flag=True, help="print JSON.")
@storage_option
def list_versions(url, as_json, storage_option):
    """The versions of REG with their aliases, gate decisions and pinned-holdout metrics."""
    reg = _open(url, storage_option)
    aliases = reg.aliases()
    rows = [_version_row(reg, v, aliases) for v in reg.versions()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no versions in {reg.url}")
        return
    click.echo(
        f"{'VERSION':>7}  {'CREATED':<20}  {'ALIASES':<20}  {'DECISION':<10}  "
        f"{'LOG_LOSS':>9}  {'ROC_AUC':>7}  SPANS"
    )
    for r in rows:
        m = r["metrics"] or {}
        click.echo(
            f"{r['version']:>7}  {r['created_at'][:19]:<20}  {','.join(r['aliases']) or '-':<20}  "
            f"{r['decision'] or '-':<10}  {_num(m.get('log_loss')):>9}  "
            f"{_num(m.get('roc_auc')):>7}  "
            f"{len(r['spans']) if r['spans'] is not None else '-'}"
        )


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"


@registry.command()
@click.argument("url", metavar="REG")
@click.argument("version", type=int)
@storage_option
def show(url, version, storage_option):
    """Everything recorded about VERSION of REG (lineage, metrics, decision), as JSON."""
    reg = _open(url, storage_option)
    info = reg.version(version)
    click.echo(
        json.dumps({**_version_row(reg, info, reg.aliases()), "lineage": info.lineage}, indent=2)
    )


@registry.command()
@click.argument("url", metavar="REG")
@click.argument("version", type=int)
@click.option("--alias", default="champion", show_default=True, help="the alias to move.")
@click.option("--reason", default="promoted by hand", show_default=True, help="why.")
@lease_wait
@storage_option
def promote(url, version, alias, reason, lease_wait, storage_option):
    """Point ALIAS (default champion) at VERSION, after checking its files' checksums."""
    reg = _open(url, storage_option)
    by = whoami("dlr registry promote")
    with _locked(reg, "dlr registry promote", lease_wait) as lease:
        reg.verify_version(version)
        current = reg.alias(alias)
        if current == version:
            click.echo(f"{alias} already points at version {version}; nothing changed")
            return
        reg.move_alias(
            alias, version, expected=current, run=None, reason=reason, lease=lease, by=by
        )
    click.echo(f"{alias}: version {current if current is not None else '-'} → {version}")


@registry.command()
@click.argument("url", metavar="REG")
@click.option(
    "--to",
    "target",
    type=int,
    help="the version to go back to "
    "(default: the version the alias pointed at before its current one).",
)
@click.option("--alias", default="champion", show_default=True, help="the alias to move.")
@click.option("--reason", default="rolled back by hand", show_default=True, help="why.")
@lease_wait
@storage_option
def rollback(url, target, alias, reason, lease_wait, storage_option):
    """Move ALIAS (default champion) back, refusing a target whose checksums fail."""
    reg = _open(url, storage_option)
    by = whoami("dlr registry rollback")
    with _locked(reg, "dlr registry rollback", lease_wait) as lease:
        current = reg.alias(alias)
        if current is None:
            raise DlrError(f"'{reg.url}' has no alias '{alias}' to roll back")
        if target is None:
            target = reg.previous_champion(alias)
            if target is None:
                raise DlrError(
                    f"'{alias}' of '{reg.url}' has no previous version to roll back to; "
                    "name one with --to"
                )
        if target == current:
            raise DlrError(f"'{alias}' already points at version {target}")
        try:
            reg.verify_version(target)
        except DlrError as e:
            raise DlrError(f"refusing to roll back to version {target}: {e}") from None
        reg.move_alias(alias, target, expected=current, run=None, reason=reason, lease=lease, by=by)
    click.echo(f"{alias}: version {current} → {target} (rolled back)")


@registry.command()
@click.argument("url", metavar="REG")
@click.option("--keep", type=int, required=True, metavar="N", help="versions to keep (see help).")
@lease_wait
@storage_option
def gc(url, keep, lease_wait, storage_option):
    """Delete old versions and the data of excluded spans nobody needs.

    Kept: the N newest versions, every aliased version, every version named in the last N
    alias moves, and every span a kept version trained on.
    """
    reg = _open(url, storage_option)
    by = whoami("dlr registry gc")
    with _locked(reg, "dlr registry gc", lease_wait):
        versions = reg.gc(keep, by=by)
        spans = reg.gc_spans(by=by)
    click.echo(
        f"removed {len(versions)} version(s) {', '.join(map(str, versions)) or ''}".rstrip()
        + f" and the data of {len(spans)} excluded span(s) {', '.join(spans)}".rstrip()
    )


@registry.command()
@click.argument("url", metavar="REG")
@click.option("--json", "as_json", is_flag=True, help="print JSON.")
@storage_option
def spans(url, as_json, storage_option):
    """The committed spans of REG, in commit order (excluded ones marked)."""
    reg = _open(url, storage_option)
    items = reg.spans(include_excluded=True)
    if as_json:
        click.echo(json.dumps([s._asdict() for s in items], indent=2))
        return
    if not items:
        click.echo(f"no spans in {reg.url}")
        return
    click.echo(
        f"{'SPAN':<24}  {'COMMITTED':<20}  {'ROWS':>9}  {'TRAIN':>9}  {'HOLDOUT':>8}  SOURCE"
    )
    for s in items:
        note = f"  [excluded: {s.reason}]" if s.excluded else ""
        click.echo(
            f"{s.id:<24}  {s.committed_at[:19]:<20}  {s.rows:>9}  {s.train_rows:>9}  "
            f"{s.holdout_rows:>8}  {s.source}{note}"
        )


@registry.command()
@click.argument("url", metavar="REG")
@click.argument("span")
@click.option("--reason", required=True, help="why the batch is taken out.")
@lease_wait
@storage_option
def exclude(url, span, reason, lease_wait, storage_option):
    """Leave SPAN (an id or a unique prefix) out of every later training set."""
    reg = _open(url, storage_option)
    with _locked(reg, "dlr registry exclude", lease_wait):
        changed = reg.exclude_span(span, reason, whoami("dlr registry exclude"))
    what = "excluded" if changed else "is already excluded; nothing changed"
    click.echo(f"span {reg.find_span(span)['id']} {what}: {reason}")


@registry.command()
@click.argument("url", metavar="REG")
@click.argument("span")
@click.option("--reason", default="included again by hand", show_default=True, help="why.")
@lease_wait
@storage_option
def include(url, span, reason, lease_wait, storage_option):
    """Put an excluded SPAN back into later training sets."""
    reg = _open(url, storage_option)
    with _locked(reg, "dlr registry include", lease_wait):
        changed = reg.include_span(span, reason, whoami("dlr registry include"))
    what = "included again" if changed else "is not excluded; nothing changed"
    click.echo(f"span {reg.find_span(span)['id']} {what}")


@registry.command()
@click.argument("url", metavar="REG")
@click.option("--json", "as_json", is_flag=True, help="print JSON.")
@storage_option
def history(url, as_json, storage_option):
    """Every alias move, exclusion, pin, ingest and gc of REG, oldest first."""
    reg = _open(url, storage_option)
    events = reg.history()
    if as_json:
        click.echo(json.dumps(events, indent=2))
        return
    for e in events:
        what = e["event"]
        if what == "alias":
            detail = f"{e['alias']}: {e['from'] if e['from'] is not None else '-'} → {e['to']}"
        elif what in ("exclude", "include"):
            detail = f"span {e['span']}"
        elif what == "ingest":
            detail = f"spans {', '.join(e['spans'])}"
        else:
            detail = ", ".join(f"{k} {e[k]}" for k in ("versions", "spans") if k in e)
        who = e.get("run") or e.get("by") or "-"
        click.echo(f"{e['at'][:19]}  {what:<8} {detail}  by {who}  ({e.get('reason') or '-'})")
