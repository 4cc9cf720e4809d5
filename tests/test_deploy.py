"""The files in deploy/ agree with each other, with pyproject.toml and with the real CLI.

No container engine, Kubernetes or SLURM runs here, so each file is checked as far as the real
tools' own parsers and schemas allow: YAML parses, Kubernetes objects validate against the
Kubernetes JSON schemas (kubernetes-validate) — the dask-kubernetes custom resources against
their CRD's structure around those schemas —, every image is the one the Dockerfile builds,
every ``dlr`` command line (README.md's too) parses with the real click CLI, and the SLURM driver
builds a real ``dask_jobqueue.SLURMCluster`` job script.
"""

import importlib.resources
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from dlr.cli import _storage_options, main

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
IMAGE = f"dlr:{PROJECT['version']}"


def yaml_files():
    return sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))


def load_all(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def compose():
    return load_all(DEPLOY / "docker-compose.yml")[0]


def k8s_objects():
    return [
        doc for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")) for doc in load_all(path)
    ]


def containers(obj):
    """Every container of a Kubernetes object or dask-kubernetes custom resource."""
    spec = obj["spec"]
    pod_specs = []
    if obj["kind"] == "DaskJob":
        pod_specs.append(spec["job"]["spec"])
        spec = spec["cluster"]["spec"]
    if obj["kind"] in ("DaskJob", "DaskCluster"):
        pod_specs += [spec["worker"]["spec"], spec["scheduler"]["spec"]]
    return [c for pod in pod_specs for c in pod["containers"]]


def check_dlr_command(argv, where):
    """Parse ``argv`` (starting with ``dlr``) with the real CLI, without running it."""
    assert argv[0] == "dlr", where
    args = list(argv[1:])
    while args and args[0] in ("-q", "--quiet"):
        args.pop(0)
    if args in (["--help"], ["--version"]):
        return
    assert args and args[0] in main.commands, f"{where}: unknown dlr command in {argv}"
    try:
        ctx = main.commands[args[0]].make_context(args[0], args[1:])
    except click.ClickException as e:
        pytest.fail(f"{where}: {shlex.join(argv)}: {e.format_message()}")
    if "storage_option" in ctx.params:
        _storage_options(ctx.params["storage_option"])


def dlr_commands_in_text(text):
    """``dlr ...`` command lines in shell code, comments and fenced code blocks."""
    found = []
    for line in text.splitlines():
        line = line.strip().lstrip("#$").strip()
        if "dlr" not in line:
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        for i, token in enumerate(tokens):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            if token == "dlr" and (i == 0 or nxt in main.commands or nxt.startswith("-")):
                found.append(tokens[i:])
                break
    return found


def fenced_code(markdown):
    """The lines of the shell code blocks (```sh, ```bash, ```console) of a Markdown text."""
    lines, language = [], None
    for line in markdown.splitlines():
        if line.startswith("```"):
            language = line[3:].strip() if language is None else None
        elif language in ("sh", "bash", "console"):
            lines.append(line)
    return "\n".join(lines)


def test_every_yaml_file_parses():
    files = yaml_files()
    assert len(files) >= 6
    for path in files:
        assert load_all(path), path


def test_the_dockerfile_builds_this_version_with_pinned_dependencies():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG DLR_VERSION=(\S+)$", dockerfile, re.M).group(1) == PROJECT["version"]
    python = re.search(r"^FROM python:(\d+\.\d+)", dockerfile, re.M).group(1)
    assert Requirement(f"python{PROJECT['requires-python']}").specifier.contains(f"{python}.0")
    pins = {}
    for line in (DEPLOY / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = Version(version)
    for dependency in map(Requirement, PROJECT["dependencies"]):
        name = dependency.name.lower()
        assert name in pins, f"constraints.txt does not pin {name}"
        assert dependency.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {dependency}"


def test_the_dockerfile_copies_only_what_the_build_context_keeps():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    kept = {
        line[1:].rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    sources = [
        src.rstrip("/")
        for line in re.findall(r"^COPY (.+)$", dockerfile, re.M)
        for src in line.split()[:-1]
    ]
    assert sources
    for src in sources:
        assert src in kept, f"COPY {src} is excluded by Dockerfile.dockerignore"
        assert (ROOT / src).exists(), src


def test_every_dlr_process_runs_the_image_of_this_version():
    images = []
    for name, service in compose()["services"].items():
        if service["image"].startswith("minio/"):
            continue
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name
        images.append(service["image"])
    images += [
        c["image"]
        for obj in k8s_objects()
        if obj["kind"].startswith("Dask")
        for c in containers(obj)
    ]
    values = load_all(DEPLOY / "helm" / "values.yaml")[0]
    images += [
        f"{values[p]['image']['repository']}:{values[p]['image']['tag']}"
        for p in ("scheduler", "worker")
    ]
    assert len(images) >= 9
    assert set(images) == {IMAGE}


def test_every_dlr_command_line_in_deploy_and_the_readmes_parses_with_the_cli():
    commands = []
    for service in compose()["services"].values():
        if isinstance(service.get("command"), list) and service["command"][0] == "dlr":
            commands.append(("docker-compose.yml", service["command"]))
    for obj in k8s_objects():
        if obj["kind"].startswith("Dask"):
            for c in containers(obj):
                if c["args"][0] == "dlr":
                    commands.append((obj["metadata"]["name"], c["args"]))
    for path in sorted(DEPLOY.rglob("*")):
        if path.suffix in (".yaml", ".yml", ".sbatch") or path.name == "Dockerfile":
            commands += [(path.name, c) for c in dlr_commands_in_text(path.read_text())]
    for readme in (DEPLOY / "README.md", ROOT / "README.md"):
        code = fenced_code(readme.read_text())
        commands += [(str(readme.relative_to(ROOT)), c) for c in dlr_commands_in_text(code)]
    commands.append(("slurm/train.py", slurm_driver().train_command("/d.zarr", "/m", "tcp://h:1")))
    kinds = {argv[1] for _, argv in commands if len(argv) > 1}
    assert {"train", "make-data", "evaluate", "cluster"} <= kinds
    assert len(commands) >= 25
    for where, argv in commands:
        check_dlr_command(argv, where)


def test_a_wrong_dlr_command_line_would_be_caught():
    with pytest.raises(pytest.fail.Exception, match="No such option"):
        check_dlr_command(["dlr", "train", "d.zarr", "--model", "m", "--learning-rat", "1"], "x")
    with pytest.raises(pytest.fail.Exception, match="Missing option"):
        check_dlr_command(["dlr", "train", "d.zarr"], "x")


def test_the_compose_training_job_uses_the_cluster_and_the_object_store():
    services = compose()["services"]
    train = services["train"]["command"]
    assert train[train.index("--scheduler") + 1] == "tcp://scheduler:8786"
    assert "endpoint_url=http://minio:9000" in train
    assert services["worker"]["command"][:3] == ["dask", "worker", "tcp://scheduler:8786"]
    assert services["worker"]["deploy"]["replicas"] == 2
    data = services["data"]["command"]
    assert data[2] == train[2]  # trains on the dataset the data job writes
    # credentials the store was started with are the ones the clients and workers use
    minio = services["minio"]["environment"]
    for name in ("train", "worker", "data"):
        env = services[name]["environment"]
        assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
        assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]


# --- Kubernetes -------------------------------------------------------------------------------


def k8s_registry():
    """The Kubernetes definitions that kubernetes-validate ships, for ``$ref`` resolution."""
    import kubernetes_validate.utils
    from referencing import Registry, Resource

    version = kubernetes_validate.utils.latest_version()
    schemas = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    definitions = json.loads(
        (schemas / f"v{version}-local-strict" / "_definitions.json").read_text()
    )
    return Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))


def k8s(name):
    return {"$ref": f"https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.{name}"}


def strict(properties, required=()):
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


# The structure of the operator's CRDs (dask_kubernetes/operator/customresources/templates.yaml,
# kubernetes.dask.org/v1), made strict: Kubernetes silently drops unknown fields of a custom
# resource, so a misspelt field would otherwise go unnoticed.
SIMPLE_META = strict(
    {
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    }
)
CLUSTER_SPEC = strict(
    {
        "idleTimeout": {"type": "integer"},
        "worker": strict(
            {
                "replicas": {"type": "integer", "minimum": 0},
                "metadata": SIMPLE_META,
                "spec": k8s("api.core.v1.PodSpec"),
            },
            ["spec"],
        ),
        "scheduler": strict(
            {
                "metadata": SIMPLE_META,
                "spec": k8s("api.core.v1.PodSpec"),
                "service": k8s("api.core.v1.ServiceSpec"),
            },
            ["spec", "service"],
        ),
    },
    ["scheduler", "worker"],
)


def resource(kind, spec):
    return strict(
        {
            "apiVersion": {"const": "kubernetes.dask.org/v1"},
            "kind": {"const": kind},
            "metadata": k8s("apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "spec": spec,
        },
        ["apiVersion", "kind", "metadata", "spec"],
    )


DASK_SCHEMAS = {
    "DaskCluster": resource("DaskCluster", CLUSTER_SPEC),
    "DaskJob": resource(
        "DaskJob",
        strict(
            {
                "job": strict(
                    {"metadata": SIMPLE_META, "spec": k8s("api.core.v1.PodSpec")}, ["spec"]
                ),
                "cluster": strict({"metadata": SIMPLE_META, "spec": CLUSTER_SPEC}, ["spec"]),
            },
            ["job", "cluster"],
        ),
    ),
}


def validate_dask_resource(obj):
    schema = DASK_SCHEMAS[obj["kind"]]
    jsonschema.Draft202012Validator(schema, registry=k8s_registry()).validate(obj)


def test_the_kubernetes_manifests_validate_against_the_schemas():
    import kubernetes_validate

    objects = k8s_objects()
    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == ["DaskCluster", "DaskJob", "PersistentVolumeClaim", "Secret"]
    for obj in objects:
        if obj["kind"] in DASK_SCHEMAS:
            validate_dask_resource(obj)
        else:
            version = kubernetes_validate.utils.latest_version()
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_dask_resource_schema_catches_mistakes():
    job = next(obj for obj in k8s_objects() if obj["kind"] == "DaskJob")
    job["spec"]["cluster"]["spec"]["worker"]["replica"] = 2  # misspelt
    with pytest.raises(jsonschema.ValidationError, match="replica"):
        validate_dask_resource(job)
    cluster = next(obj for obj in k8s_objects() if obj["kind"] == "DaskCluster")
    cluster["spec"]["scheduler"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8786"
    with pytest.raises(jsonschema.ValidationError):
        validate_dask_resource(cluster)


def test_the_kubernetes_pieces_refer_to_each_other():
    objects = {obj["kind"]: obj for obj in k8s_objects()}
    secret = objects["Secret"]["metadata"]["name"]
    claim = objects["PersistentVolumeClaim"]["metadata"]["name"]
    job = objects["DaskJob"]
    for c in containers(job) + containers(objects["DaskCluster"]):
        if c["name"] in ("job", "worker"):  # whoever reads the data has the credentials
            assert {"secretRef": {"name": secret}} in c["envFrom"], c["name"]
    runner = job["spec"]["job"]["spec"]
    volumes = {v["name"]: v for v in runner["volumes"]}
    (job_container,) = runner["containers"]
    for mount in job_container["volumeMounts"]:
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim
    model = job_container["args"][job_container["args"].index("--model") + 1]
    assert model.startswith(job_container["volumeMounts"][0]["mountPath"] + "/")


# Keys of the dask Helm chart's values.yaml (github.com/dask/helm-chart, dask/values.yaml) that
# deploy/helm/values.yaml may set.
HELM_KEYS = {
    "fullnameOverride": None,
    "scheduler": {
        "image": {"repository", "tag", "pullPolicy", "pullSecrets"},
        "serviceType": None,
        "servicePort": None,
        "resources": None,
        "extraArgs": None,
        "env": None,
    },
    "worker": {
        "image": {"repository", "tag", "pullPolicy", "pullSecrets", "dask_worker"},
        "replicas": None,
        "threads_per_worker": None,
        "env": None,
        "resources": None,
        "extraArgs": None,
        "mounts": None,
    },
    "jupyter": {"enabled": None},
}


def test_the_helm_values_use_only_keys_of_the_dask_chart():
    values = load_all(DEPLOY / "helm" / "values.yaml")[0]

    def check(given, allowed, where):
        for key, value in given.items():
            assert key in allowed, f"{where}{key} is not a value of the dask chart"
            sub = allowed[key] if isinstance(allowed, dict) else None
            if isinstance(sub, dict):
                check(value, sub, f"{where}{key}.")
            elif isinstance(sub, set):
                assert set(value) <= sub, f"{where}{key}: {set(value) - sub}"

    check(values, HELM_KEYS, "")
    assert values["jupyter"]["enabled"] is False
    secret = next(obj for obj in k8s_objects() if obj["kind"] == "Secret")
    for ref in (e["valueFrom"]["secretKeyRef"] for e in values["worker"]["env"]):
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]


# --- SLURM ------------------------------------------------------------------------------------


def slurm_driver():
    spec = importlib.util.spec_from_file_location("slurm_train", DEPLOY / "slurm" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_slurm_driver_makes_a_real_jobqueue_cluster():
    driver = slurm_driver()
    # the scheduler runs in this process: keep it on the loopback interface here
    with driver.make_cluster(queue="compute", scheduler_options={"host": "127.0.0.1"}) as cluster:
        script = cluster.job_script()
    assert "#SBATCH -p compute" in script
    assert "#SBATCH -t 04:00:00" in script
    assert "--nworkers 2" in script
    assert f"{sys.executable} -m distributed.cli.dask_worker" in script


def test_the_sbatch_script_is_valid_bash_and_runs_the_driver():
    sbatch = DEPLOY / "slurm" / "train.sbatch"
    subprocess.run(["bash", "-n", str(sbatch)], check=True)
    lines = sbatch.read_text().splitlines()
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    directives = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    assert directives and max(directives) < first_command  # sbatch stops reading at a command
    run = next(line for line in lines if "train.py" in line and not line.startswith("#"))
    assert (ROOT / shlex.split(run)[1]).is_file()
    with pytest.raises(SystemExit) as exit_:
        slurm_driver().main(["--help"])
    assert exit_.value.code == 0
