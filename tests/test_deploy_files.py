"""The deployment files (docker-compose.yml, deploy/, Dockerfile) agree with each other and with
fastq: the services and ports they name, the CLI commands they run, the Redis keys the autoscaler
reads, the metric names the dashboard queries, and the grace periods against the tasks' limits."""
from __future__ import annotations

import importlib.util
import json
import re
import shlex

import pytest

from fastq import keys
from fastq.cli import main
from tests.conftest import ROOT

yaml = pytest.importorskip("yaml", reason="pyyaml is not installed: the YAML files cannot be "
                                          "parsed (pip install 'fastq[dev]')")

DEPLOY = ROOT / "deploy"
CELERY_EXPORTER_METRICS = {
    *(f"celery_task_{e}_total" for e in ("sent", "received", "started", "succeeded", "failed",
                                        "retried", "revoked")),
    "celery_task_runtime_bucket", "celery_task_runtime_sum", "celery_task_runtime_count",
    "celery_worker_up", "celery_worker_tasks_active", "celery_queue_length",
    "celery_active_worker_count", "celery_active_process_count",
}
LABELS = {"name", "hostname", "queue_name", "le"}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _k8s() -> dict[tuple[str, str], dict]:
    docs = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"], doc["metadata"].get("name", path.name)] = doc
    return docs


def _option(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _parses(args: list[str]) -> None:
    """``fastq -A <module> <command> ...`` is a valid command line of this CLI (parsed by
    click, not run)."""
    assert args[0] == "-A", args
    ctx = main.make_context("fastq", list(args[:3]))
    command = main.get_command(ctx, args[2])
    assert command is not None, f"fastq has no command {args[2]!r}"
    command.make_context(args[2], list(args[3:]), parent=ctx)


def _longest_soft_limit_s() -> float:
    spec = importlib.util.spec_from_file_location("deploy_example_proj", DEPLOY / "example/proj.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    limits = [t.soft_limit_ms for t in module.app.tasks.values() if t.soft_limit_ms]
    assert limits, "the example project has no task with a soft time limit"
    return max(limits) / 1000


def test_compose_services_and_what_they_run():
    services = _compose()["services"]
    assert set(services) == {"redis", "worker", "beat", "web", "prometheus", "grafana"}
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    assert " ".join(redis["command"]).count("--appendonly yes") == 1
    assert any(v.endswith(":/data") for v in redis["volumes"])
    for name in ("worker", "beat", "web"):
        svc = services[name]
        assert svc["environment"]["FASTQ_BROKER_URL"] == "redis://redis:6379/0"
        assert svc["command"][:3] == ["-A", "proj", name]
    for name in ("worker", "beat", "web"):
        _parses(services[name]["command"])
    assert _option(services["web"]["command"], "--host") == "0.0.0.0"  # reachable from outside
    # the healthcheck asks about this very worker, with a command the CLI takes
    worker = services["worker"]
    check = worker["healthcheck"]["test"]
    assert check[:5] == ["CMD", "fastq", "-A", "proj", "health"]
    assert _option(check, "-w") == _option(worker["command"], "-n")
    _parses(check[2:])
    assert "8000:8000" in services["web"]["ports"]
    assert _option(services["web"]["command"], "--port") == "8000"


def test_compose_grace_period_covers_the_longest_soft_limit():
    grace = _compose()["services"]["worker"]["stop_grace_period"]
    assert re.fullmatch(r"\d+s", grace)
    assert int(grace[:-1]) >= _longest_soft_limit_s()


def test_prometheus_scrapes_the_workers_and_the_beats_metrics_ports():
    services = _compose()["services"]
    port = _option(services["worker"]["command"], "--metrics-port")
    beat_port = _option(services["beat"]["command"], "--metrics-port")
    mounted = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]
               if v.startswith("./")}
    config_path = ROOT / mounted["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load(config_path.read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]]
    assert targets == [f"worker:{port}", f"beat:{beat_port}"]


def test_grafana_provisions_the_dashboard_from_where_compose_mounts_it():
    grafana = _compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: ROOT / v.split(":")[0] for v in grafana["volumes"]
              if v.startswith("./")}
    provisioning = mounts["/etc/grafana/provisioning"]
    datasource = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards/fastq.yml").read_text())
    container_dir = provider["providers"][0]["options"]["path"]
    dashboard = mounts[container_dir] / "fastq.json"
    assert dashboard.is_file()
    uid = datasource["datasources"][0]["uid"]
    panels = json.loads(dashboard.read_text())["panels"]
    assert {p["datasource"]["uid"] for p in panels} == {uid}


def test_dashboard_queries_only_celery_exporter_metrics_and_labels():
    dashboard = json.loads((DEPLOY / "grafana/dashboards/fastq.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(celery_\w+|fastq_\w+)\b", e)}
    assert used == CELERY_EXPORTER_METRICS  # every one of them, and nothing else
    labels = {label.strip() for e in exprs for group in re.findall(r"by \(([^)]*)\)", e)
              for label in group.split(",")}
    labels |= {m for e in exprs for m in re.findall(r"(\w+)=~?\"", e)}
    assert labels <= LABELS


def test_k8s_worker_probes_grace_and_metrics():
    docs = _k8s()
    pod = docs["Deployment", "fastq-worker"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    args = container["args"]
    assert args[:3] == ["-A", "proj", "worker"] and _option(args, "-n") == "$(POD_NAME)"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "secretKeyRef" in env["FASTQ_BROKER_URL"]["valueFrom"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:2] == ["sh", "-c"]
        line = shlex.split(command[2])
        assert line[:5] == ["exec", "fastq", "-A", "proj", "health"]
        assert line[5:] == ["-w", "$POD_NAME"]  # the shell expands it to the worker's -n
        _parses([*line[2:5], "-w", "pod-0"])
    assert pod["spec"]["terminationGracePeriodSeconds"] >= _longest_soft_limit_s()
    port = _option(args, "--metrics-port")
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == port
    assert {p["containerPort"] for p in container["ports"]} == {int(port)}


def test_k8s_beat_is_one_replica_and_web_service_reaches_web():
    docs = _k8s()
    beat = docs["Deployment", "fastq-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    beat_args = beat["template"]["spec"]["containers"][0]["args"]
    _parses(beat_args)
    port = _option(beat_args, "--metrics-port")
    assert beat["template"]["metadata"]["annotations"]["prometheus.io/port"] == port
    assert {p["containerPort"] for p in beat["template"]["spec"]["containers"][0]["ports"]} \
        == {int(port)}
    web = docs["Deployment", "fastq-web"]["spec"]
    service = docs["Service", "fastq-web"]["spec"]
    assert service["selector"].items() <= web["template"]["metadata"]["labels"].items()
    container = web["template"]["spec"]["containers"][0]
    _parses(container["args"])
    assert _option(container["args"], "--host") == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[service["ports"][0]["targetPort"]] == int(_option(container["args"], "--port"))
    for kind_name, doc in docs.items():  # every Deployment's selector selects its own pods
        if kind_name[0] == "Deployment":
            assert doc["spec"]["selector"]["matchLabels"].items() <= \
                doc["spec"]["template"]["metadata"]["labels"].items()


def test_k8s_autoscaler_reads_the_workers_queue_streams():
    docs = _k8s()
    scaled = docs["ScaledObject", "fastq-worker"]["spec"]
    worker = docs["Deployment", scaled["scaleTargetRef"]["name"]]
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    queues = _option(args, "-Q").split(",") if "-Q" in args else ["default"]
    triggers = [t["metadata"] for t in scaled["triggers"]]
    assert {t["stream"] for t in triggers} == {s for q in queues for s in keys.streams(q)}
    assert all(t["consumerGroup"] == keys.GROUP and int(t["streamLength"]) > 0 for t in triggers)
    assert {t["type"] for t in scaled["triggers"]} == {"redis-streams"}


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_dockerfile_installs_the_web_extra_and_ships_the_project():
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text and '".[web]"' in text
    copied = re.findall(r"^COPY (deploy/\S+) ", text, re.M)
    assert copied and all((ROOT / c).is_file() for c in copied)
    assert 'ENTRYPOINT ["fastq"]' in text


def test_k8s_manifests_validate_against_kubernetes_schemas():
    """Kubernetes' own OpenAPI schemas (kubernetes-validate bundles them: nothing is pulled);
    KEDA's ScaledObject is a custom resource, checked for the fields KEDA requires."""
    import kubernetes_validate

    checked = 0
    for doc in _k8s().values():
        if doc["apiVersion"].startswith("keda.sh/"):
            spec = doc["spec"]
            assert spec["scaleTargetRef"]["name"] in {n for k, n in _k8s() if k == "Deployment"}
            assert spec["triggers"] and all(t["type"] == "redis-streams" for t in spec["triggers"])
            continue
        kubernetes_validate.validate(doc, "1.30", strict=True)  # raises on a schema error
        checked += 1
    assert checked >= 4  # the worker, beat and web Deployments, and the web Service
    broken = {**_k8s()["Deployment", "fastq-worker"], "spec": {"replicas": "three"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30", strict=True)


def _compose_cli() -> list[str] | None:
    """``docker compose`` (the v2 plugin) where it exists, else Debian's ``docker-compose``
    (v1, which .ci/run installs): both parse and validate a file without a Docker daemon."""
    import shutil
    import subprocess

    docker = shutil.which("docker")
    if docker and not subprocess.run([docker, "compose", "version"],
                                     capture_output=True).returncode:
        return [docker, "compose"]
    v1 = shutil.which("docker-compose")
    return [v1] if v1 else None


def test_compose_file_passes_docker_compose_config(tmp_path):
    import subprocess

    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither docker compose nor docker-compose is installed (.ci/run installs "
                    "docker-compose): the compose file is checked by the tests above only")

    def config(path):
        return subprocess.run([*cli, "-f", str(path), "--project-directory", str(ROOT),
                               "config", "-q"], capture_output=True, text=True, timeout=60)

    done = config(ROOT / "docker-compose.yml")
    assert done.returncode == 0, done.stderr
    misspelt = tmp_path / "docker-compose.yml"  # the check is real: a wrong key is refused
    misspelt.write_text((ROOT / "docker-compose.yml").read_text().replace(
        "stop_grace_period:", "stop_grase_period:", 1))
    refused = config(misspelt)
    assert refused.returncode != 0 and "stop_grase_period" in refused.stderr + refused.stdout
