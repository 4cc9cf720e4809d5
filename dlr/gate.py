"""The promotion gate: threshold expressions and the decision they give (pure, no I/O).

A gate is a list of expressions, each ``METRIC OP BOUND``:

    roc_auc>=0.70                 a value threshold
    log_loss<=champion+0.5%       a change threshold: may worsen by at most 0.5 % of the champion's
    roc_auc>=champion-0.002       a change threshold: may drop by at most 0.002 (absolute)
    psi<=0.25                     a drift threshold (max over features)

``METRIC`` is ``log_loss``, ``roc_auc`` or ``accuracy`` (the keys of
:func:`dlr.scoring.evaluate`), or a drift statistic: ``psi`` (the largest population stability
index over the features), ``smd`` (the largest absolute standardized mean difference) or
``label_shift`` (the largest absolute change of a class's rate). ``OP`` is ``>=``, ``<=``, ``>``
or ``<``. Every metric threshold applies to the pinned holdout and to the fresh holdout. With no
champion (the first run), change thresholds are skipped and only value thresholds apply. A NaN
metric fails its threshold.
"""

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

from dlr.errors import DlrError

METRICS = ("log_loss", "roc_auc", "accuracy")
DRIFT = ("psi", "smd", "label_shift")
HOLDOUTS = ("pinned", "fresh")
OPS = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}
_NUMBER = r"[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?"
_EXPRESSION = re.compile(
    rf"^(?P<metric>[a-z_]+)(?P<op>>=|<=|>|<)"
    rf"(?:(?P<champion>champion)(?:(?P<sign>[+-])(?P<delta>{_NUMBER})(?P<pct>%)?)?"
    rf"|(?P<value>[+-]?(?:{_NUMBER})))$"
)


class GateError(DlrError):
    """A gate expression or configuration that cannot be used."""


@dataclass(frozen=True)
class Threshold:
    """One parsed expression. ``relative``: None (a value threshold), ``"abs"`` or ``"pct"``
    (a change threshold: the bound is the champion's value plus ``value`` absolute, or plus
    ``value`` percent of it)."""

    text: str
    metric: str
    op: str
    value: float
    relative: str | None = None

    @property
    def is_drift(self) -> bool:
        return self.metric in DRIFT

    def bound(self, champion: float | None) -> float:
        """The number the metric is compared with (``champion``: the champion's value)."""
        if self.relative is None:
            return self.value
        if self.relative == "abs":
            return champion + self.value
        return champion + self.value / 100 * abs(champion)


class Check(NamedTuple):
    """One threshold applied to one holdout (``holdout`` None for drift thresholds)."""

    threshold: str
    holdout: str | None
    value: float | None
    bound: float | None
    passed: bool
    note: str


class Decision(NamedTuple):
    passed: bool
    reason: str
    checks: list[Check]


def parse_threshold(text: str) -> Threshold:
    """Parse one expression (spaces are ignored); raises :class:`GateError` naming it."""
    if not isinstance(text, str):
        raise GateError(f"gate expression {text!r} is not a string")
    match = _EXPRESSION.match(re.sub(r"\s+", "", text))
    if match is None:
        raise GateError(
            f"cannot read gate expression {text!r}: expected METRIC OP BOUND, e.g. "
            "'roc_auc>=0.70', 'log_loss<=champion+0.5%' or 'roc_auc>=champion-0.002'"
        )
    metric, op = match["metric"], match["op"]
    if metric not in METRICS + DRIFT:
        raise GateError(
            f"gate expression {text!r}: unknown metric {metric!r}; choose one of "
            f"{', '.join(METRICS + DRIFT)}"
        )
    if match["champion"] is None:
        return Threshold(text, metric, op, float(match["value"]))
    if metric in DRIFT:
        raise GateError(f"gate expression {text!r}: drift thresholds take a value, not champion")
    delta = float(match["delta"] or 0)
    if match["sign"] == "-":
        delta = -delta
    return Threshold(text, metric, op, delta, "pct" if match["pct"] else "abs")


def parse_gate(expressions) -> tuple[Threshold, ...]:
    """Parse the gate configuration (a list of expressions); an empty one is refused."""
    if isinstance(expressions, str):
        expressions = [expressions]
    thresholds = tuple(parse_threshold(e) for e in expressions or ())
    if not any(not t.is_drift for t in thresholds):
        raise GateError(
            "no gate configured: give at least one metric threshold with --gate (or 'gate' in "
            "the config), e.g. --gate 'roc_auc>=0.70' --gate 'log_loss<=champion+0.5%'"
        )
    return thresholds


def decide(
    thresholds: tuple[Threshold, ...],
    candidate: dict[str, dict | None],
    champion: dict[str, dict | None] | None,
    drift: dict | None = None,
) -> Decision:
    """Apply the gate.

    Parameters
    ----------
    thresholds : from :func:`parse_gate`.
    candidate : {"pinned": metrics, "fresh": metrics or None} — metrics as
        :func:`dlr.scoring.evaluate` returns them; a holdout given as None is not checked
        (a fresh holdout with no rows).
    champion : the same for the champion, or None on the first run.
    drift : the summary of :func:`dlr.drift.summary` (``psi``, ``smd``, ``label_shift``), or
        None when there is no reference to compare with.
    """
    checks = []
    for t in thresholds:
        if t.is_drift:
            checks.append(_drift_check(t, drift))
            continue
        for holdout in HOLDOUTS:
            metrics = candidate.get(holdout)
            if metrics is None:
                checks.append(Check(t.text, holdout, None, None, True, "no rows: not checked"))
                continue
            base = None
            if t.relative is not None:
                if champion is None:
                    checks.append(Check(t.text, holdout, None, None, True, "no champion yet"))
                    continue
                base = champion[holdout][t.metric]
            checks.append(_metric_check(t, holdout, metrics[t.metric], base))
    failed = [c for c in checks if not c.passed]
    applied = [c for c in checks if c.value is not None or not c.passed]
    if failed:
        reason = "; ".join(_describe(c) for c in failed)
    elif applied:
        reason = f"all {len(applied)} checks passed"
    else:
        reason = "first version: no champion to compare with and no value threshold"
    return Decision(not failed, reason, checks)


def _metric_check(t: Threshold, holdout: str, value: float, champion: float | None) -> Check:
    if champion is not None and math.isnan(champion):
        return Check(t.text, holdout, value, None, False, "the champion's metric is NaN")
    bound = t.bound(champion)
    if math.isnan(value):
        return Check(t.text, holdout, value, bound, False, "the metric is NaN")
    return Check(t.text, holdout, value, bound, OPS[t.op](value, bound), "")


def _drift_check(t: Threshold, drift: dict | None) -> Check:
    if drift is None or drift.get(t.metric) is None:
        return Check(t.text, None, None, None, True, "no drift reference: not checked")
    value = float(drift[t.metric])
    if math.isnan(value):
        return Check(t.text, None, value, t.value, False, "the statistic is NaN")
    return Check(t.text, None, value, t.value, OPS[t.op](value, t.value), "")


def _describe(c: Check) -> str:
    where = f" on the {c.holdout} holdout" if c.holdout else ""
    if c.note:
        return f"{c.threshold} failed{where}: {c.note}"
    return f"{c.threshold} failed{where}: {c.value:.6g} vs bound {c.bound:.6g}"
