"""pipelines/: the scheduler definitions are valid for their tools and run the real CLI, and the
Prefect flow runs for real (Prefect's local test harness, no external server)."""

import configparser
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import types
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dlr.cli import main
from dlr.estimator import LogisticRegression
from dlr.gate import parse_gate
from dlr.registry import Registry
from tests.test_deploy import IMAGE, check_dlr_command, k8s_objects, load_all
from tests.test_retrain import Days

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ROOT / "pipelines"
CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\d+(-\d+)?)(/\d+)?)*$")


def check_installed_command(argv, where):
    """Parse a scheduler's ``dlr`` command line, its ``--config`` being pipelines/retrain.toml
    installed where the command expects it."""
    argv = [Path(argv[0]).name, *argv[1:]]
    if "--config" in argv:
        i = argv.index("--config") + 1
        assert argv[i] == "/etc/dlr/retrain.toml", where
        argv[i] = str(PIPELINES / "retrain.toml")
    check_dlr_command(argv, where)
    return argv


def test_the_example_config_is_read_by_dlr_retrain():
    path = PIPELINES / "retrain.toml"
    command = main.commands["retrain"]
    ctx = command.make_context("retrain", ["--config", str(path)])
    doc = tomllib.loads(path.read_text())
    assert ctx.params["registry_url"] == doc["registry"]
    assert ctx.params["gate"] == tuple(doc["gate"])
    assert ctx.params["max_iter"] == doc["max-iter"] and ctx.params["solver"] == "lbfgs"
    parse_gate(ctx.params["gate"])
    flag_wins = command.make_context("retrain", ["--config", str(path), "--max-iter", "7"])
    assert flag_wins.params["max_iter"] == 7


def test_the_crontab_line_runs_dlr_retrain_daily():
    entries = [
        line
        for line in (PIPELINES / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not re.match(r"^[A-Z_]+=", line)
    ]
    assert len(entries) == 1
    fields = entries[0].split(None, 5)
    assert all(CRON_FIELD.match(f) for f in fields[:5]), fields
    assert fields[:5] == ["0", "2", "*", "*", "*"]  # 02:00 every day...
    assert "CRON_TZ=UTC" in (PIPELINES / "crontab").read_text().splitlines()  # ...UTC
    argv = check_installed_command(shlex.split(fields[5].split(">>")[0]), "crontab")
    assert "retrain" in argv


def systemd_unit(name):
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((PIPELINES / "systemd" / name).read_text())
    return parser


def test_the_systemd_timer_starts_the_service_persistently():
    service, timer = systemd_unit("dlr-retrain.service"), systemd_unit("dlr-retrain.timer")
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["OnCalendar"] == "*-*-* 02:00:00 UTC"  # the crontab's time
    assert timer["Timer"]["Unit"] == "dlr-retrain.service"
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["SuccessExitStatus"].split() == ["3", "4", "5"]
    argv = shlex.split(service["Service"]["ExecStart"])
    assert check_installed_command(argv, "dlr-retrain.service")[1] == "retrain"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_accepts_the_units(tmp_path):
    calendar = systemd_unit("dlr-retrain.timer")["Timer"]["OnCalendar"]
    subprocess.run(["systemd-analyze", "calendar", calendar], check=True, capture_output=True)
    for name in ("dlr-retrain.service", "dlr-retrain.timer"):  # with the dlr of this venv
        text = (PIPELINES / "systemd" / name).read_text()
        (tmp_path / name).write_text(
            text.replace("/opt/dlr/.venv/bin/dlr", str(Path(sys.executable).with_name("dlr")))
        )
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_the_kubernetes_cronjob_validates_and_uses_the_deploy_cluster():
    import kubernetes_validate

    (cronjob,) = load_all(PIPELINES / "kubernetes-cronjob.yaml")
    kubernetes_validate.validate(cronjob, kubernetes_validate.utils.latest_version(), strict=True)
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    (container,) = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    check_dlr_command(container["args"], "kubernetes-cronjob.yaml")
    deploy = {obj["kind"]: obj for obj in k8s_objects()}
    scheduler = container["args"][container["args"].index("--scheduler") + 1]
    assert scheduler == f"tcp://{deploy['DaskCluster']['metadata']['name']}-scheduler:8786"
    assert {"secretRef": {"name": deploy["Secret"]["metadata"]["name"]}} in container["envFrom"]
    rule = spec["jobTemplate"]["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["onExitCodes"]["containerName"] == container["name"]
    assert rule["onExitCodes"]["values"] == [3, 4]  # final outcomes, not failures to retry


def load_flow_module():
    spec = importlib.util.spec_from_file_location("prefect_flow", PIPELINES / "prefect_flow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_prefect_flow_retries_with_the_same_run_key_and_never_trains_twice(
    tmp_path, monkeypatch
):
    from prefect.testing.utilities import prefect_test_harness

    days = Days(tmp_path)
    days.ingest(1)
    config = tmp_path / "retrain.toml"
    config.write_text(
        f'registry = "{days.url}"\nholdout = "{days.holdout}"\ngate = ["roc_auc>=0.7"]\n'
        'solver = "newton"\n'
    )
    flows = load_flow_module()
    monkeypatch.setattr(
        flows, "retrain_task", flows.retrain_task.with_options(retry_delay_seconds=0)
    )
    calls = {"fit": 0, "move": 0}
    fit, move = LogisticRegression.fit, Registry.move_alias

    def counted_fit(self, *args, **kwargs):
        calls["fit"] += 1
        return fit(self, *args, **kwargs)

    def failing_once(self, *args, **kwargs):  # the store fails while the alias is written
        calls["move"] += 1
        if calls["move"] == 1:
            raise OSError("connection reset by peer")
        return move(self, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", counted_fit)
    monkeypatch.setattr(Registry, "move_alias", failing_once)
    # the runs as the deployment's 02:00 run of 2026-11-30 (started later, by hand): its key
    scheduled = types.SimpleNamespace(scheduled_start_time=datetime(2026, 11, 30, 2, tzinfo=UTC))
    monkeypatch.setattr(flows, "flow_run", scheduled)
    with prefect_test_harness(server_startup_timeout=60):
        state = flows.retrain_flow(config=str(config), return_state=True)
        assert state.is_completed() and state.result() == 0
        again = flows.retrain_flow(config=str(config), return_state=True)  # same day, same key
        assert again.is_completed() and again.result() == 0
    assert calls == {"fit": 1, "move": 2}  # the retry only finished the alias move
    reg = days.registry
    assert [v.version for v in reg.versions()] == [1]
    assert reg.alias("champion") == 1
    (run,) = {v.lineage["run_key"] for v in reg.versions()}
    assert run == "20261130T000000Z"  # from the scheduled time, not the time it ran
    assert reg.run_record(run)["status"] == "finished"
