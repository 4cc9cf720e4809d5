"""The promotion gate: expressions, value and change thresholds on both holdouts, drift."""

import math

import pytest

from dlr.gate import GateError, Threshold, decide, parse_gate, parse_threshold

GATE = parse_gate(["roc_auc>=0.70", "log_loss<=champion+0.5%", "roc_auc>=champion-0.002"])


def metrics(log_loss, roc_auc, accuracy=0.8):
    return {"log_loss": log_loss, "roc_auc": roc_auc, "accuracy": accuracy}


def holdouts(pinned, fresh):
    return {"pinned": pinned, "fresh": fresh}


CHAMPION = holdouts(metrics(0.400, 0.850), metrics(0.420, 0.840))


@pytest.mark.parametrize(
    "text, fields",
    [
        ("roc_auc>=0.70", ("roc_auc", ">=", 0.70, None)),
        ("log_loss <= 0.5", ("log_loss", "<=", 0.5, None)),
        ("accuracy>.9", ("accuracy", ">", 0.9, None)),
        ("log_loss<=champion+0.5%", ("log_loss", "<=", 0.5, "pct")),
        ("roc_auc>=champion-0.002", ("roc_auc", ">=", -0.002, "abs")),
        ("log_loss<champion", ("log_loss", "<", 0.0, "abs")),
        ("psi<=0.25", ("psi", "<=", 0.25, None)),
        ("smd<1e-1", ("smd", "<", 0.1, None)),
    ],
)
def test_expressions_parse(text, fields):
    assert parse_threshold(text) == Threshold(text, *fields)


def test_change_bounds_are_relative_or_absolute_to_the_champion():
    assert parse_threshold("log_loss<=champion+0.5%").bound(0.4) == pytest.approx(0.402)
    assert parse_threshold("roc_auc>=champion-0.002").bound(0.85) == pytest.approx(0.848)
    assert parse_threshold("roc_auc>=champion-1%").bound(0.8) == pytest.approx(0.792)


@pytest.mark.parametrize(
    "text, message",
    [
        ("roc_auc=>0.7", "cannot read gate expression 'roc_auc=>0.7'"),
        ("auc>=0.7", "gate expression 'auc>=0.7': unknown metric 'auc'"),
        ("log_loss<=champion*2", "cannot read gate expression 'log_loss<=champion\\*2'"),
        ("roc_auc>=", "cannot read gate expression 'roc_auc>='"),
        ("psi<=champion+1", "'psi<=champion\\+1': drift thresholds take a value"),
    ],
)
def test_bad_expressions_are_errors_naming_them(text, message):
    with pytest.raises(GateError, match=message):
        parse_gate([text])


@pytest.mark.parametrize("config", [[], None, ["psi<=0.2"]])
def test_an_empty_gate_is_refused(config):
    with pytest.raises(GateError, match="no gate configured"):
        parse_gate(config)


def test_a_candidate_better_on_both_holdouts_passes():
    decision = decide(GATE, holdouts(metrics(0.39, 0.86), metrics(0.41, 0.85)), CHAMPION)
    assert decision.passed
    assert decision.reason == "all 6 checks passed"


def test_a_candidate_worse_on_the_pinned_holdout_is_rejected():
    decision = decide(GATE, holdouts(metrics(0.41, 0.86), metrics(0.41, 0.85)), CHAMPION)
    assert not decision.passed
    assert decision.reason.startswith(
        "log_loss<=champion+0.5% failed on the pinned holdout: 0.41 vs bound 0.402"
    )


def test_better_on_the_pinned_holdout_but_worse_on_the_fresh_one_is_rejected():
    decision = decide(GATE, holdouts(metrics(0.39, 0.86), metrics(0.41, 0.80)), CHAMPION)
    assert not decision.passed
    assert [(c.threshold, c.holdout) for c in decision.checks if not c.passed] == [
        ("roc_auc>=champion-0.002", "fresh")
    ]


def test_within_the_allowed_change_passes():
    # 0.3 % worse log-loss and 0.001 lower AUC are inside +0.5 % and −0.002
    decision = decide(GATE, holdouts(metrics(0.4012, 0.849), metrics(0.4212, 0.839)), CHAMPION)
    assert decision.passed


@pytest.mark.parametrize("holdout", ["pinned", "fresh"])
def test_a_nan_metric_fails(holdout):
    candidate = holdouts(metrics(0.39, 0.86), metrics(0.41, 0.85))
    candidate[holdout] = metrics(0.39, math.nan)
    decision = decide(GATE, candidate, CHAMPION)
    assert not decision.passed
    assert f"roc_auc>=0.70 failed on the {holdout} holdout: the metric is NaN" in decision.reason


def test_a_nan_champion_metric_fails_a_change_threshold():
    champion = holdouts(metrics(0.4, 0.85), metrics(0.42, math.nan))
    decision = decide(GATE, holdouts(metrics(0.39, 0.86), metrics(0.41, 0.85)), champion)
    assert not decision.passed
    assert "on the fresh holdout: the champion's metric is NaN" in decision.reason


def test_the_first_run_applies_only_value_thresholds():
    candidate = holdouts(metrics(0.9, 0.75), metrics(0.9, 0.72))
    decision = decide(GATE, candidate, None)
    assert decision.passed
    applied = [c for c in decision.checks if c.value is not None]
    assert {c.threshold for c in applied} == {"roc_auc>=0.70"}
    assert not decide(GATE, holdouts(metrics(0.9, 0.75), metrics(0.9, 0.65)), None).passed


def test_the_first_run_with_only_change_thresholds_passes_and_says_why():
    decision = decide(parse_gate(["log_loss<=champion"]), holdouts(metrics(0.9, 0.7), None), None)
    assert decision.passed
    assert decision.reason.startswith("first version")


def test_an_empty_fresh_holdout_is_not_checked():
    decision = decide(GATE, holdouts(metrics(0.39, 0.86), None), CHAMPION)
    assert decision.passed
    assert {c.note for c in decision.checks if c.holdout == "fresh"} == {"no rows: not checked"}


def test_drift_thresholds_block_promotion():
    gate = parse_gate(["roc_auc>=0.5", "psi<=0.25", "label_shift<=0.05"])
    good = holdouts(metrics(0.39, 0.86), metrics(0.41, 0.85))
    assert decide(gate, good, CHAMPION, {"psi": 0.1, "smd": 0.2, "label_shift": 0.01}).passed
    drifted = decide(gate, good, CHAMPION, {"psi": 0.4, "smd": 0.2, "label_shift": 0.01})
    assert not drifted.passed
    assert drifted.reason == "psi<=0.25 failed: 0.4 vs bound 0.25"
    # with no reference (first run) the drift thresholds are not checked
    assert decide(gate, good, None, None).passed
