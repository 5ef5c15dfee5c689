"""The deployment files: valid, and in step with the command line and the metrics.

``compose.yaml`` is checked against the Compose specification (check-jsonschema's
vendored schema), ``deploy/kubernetes.yaml`` and ``deploy/hpa.yaml`` against the
Kubernetes API's own schemas (kubernetes-validate, strict: unknown fields are errors),
``deploy/keda.yaml`` against KEDA's ScaledObject (cloudcoil-models-keda, pydantic models
generated from KEDA's CRD, plus a check that no field was dropped as unknown), and the
Grafana dashboard's queries with a PromQL parser. All of them ship their schemas: no
test here needs the network. The tests of meaning check what a schema cannot: ports,
probes, mounts and queue names agree with the code.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject
from pydantic import ValidationError

from resolwe_storage.cli.base import load_all_commands
from resolwe_storage.config import load_config
from workers.messages import QUEUES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
APP_SERVICES = ("migrate", "scheduler", "worker", "dashboard")
#: Long-running services and the port each serves /metrics, /healthz and /readyz on.
SERVED_PORTS = {"scheduler": 9192, "worker": 9191, "dashboard": 8080}
ENVIRON = {
    "RESOLWE_STORAGE_DATABASE": "postgresql://storage:pw@postgres:5432/storage",
    "RESOLWE_STORAGE_BROKER": "redis://redis:6379/0",
}
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
#: Gauges read from the catalog and Redis, served by every scheduler and dashboard
#: replica alike: a panel must take their max, not their sum.
REPLICATED_GAUGES = {
    "resolwe_storage_items",
    "resolwe_storage_copies",
    "resolwe_storage_copy_bytes",
    "resolwe_storage_under_replicated_items",
    "resolwe_storage_damaged_items",
    "resolwe_storage_lost_items",
    "resolwe_storage_queue_jobs",
    "resolwe_storage_queue_oldest_job_age_seconds",
    "resolwe_storage_workers_alive",
    "resolwe_storage_deletes_paused",
}
METRIC_NAME = re.compile(r"\bresolwe_storage_[A-Za-z0-9_]+")


def _load_all(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]


def _named(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == kind}


def _bound_port(args: list[str], option: str) -> int:
    """The port of ``option 0.0.0.0:PORT`` in ``args``; fails unless bound to all interfaces."""
    assert option in args, f"{args} lack {option}"
    host, _, port = args[args.index(option) + 1].rpartition(":")
    assert host == "0.0.0.0", f"{option} must listen on 0.0.0.0 in a container, not {host!r}"
    return int(port)


def _serving_port(args: list[str]) -> int:
    """The port a long-running process serves its health and metrics on."""
    return _bound_port(args, "--bind" if args[0] == "dashboard" else "--metrics-bind")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def manifest() -> list[dict[str, Any]]:
    return _load_all("kubernetes.yaml")


@pytest.fixture(scope="module")
def deployments(manifest: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return _named(manifest, "Deployment")


@pytest.fixture(scope="module")
def deployed_config_path(manifest: list[dict[str, Any]], tmp_path_factory: Any) -> Path:
    config_map = _named(manifest, "ConfigMap")["resolwe-storage-config"]
    path = tmp_path_factory.mktemp("configmap") / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    return path


@pytest.fixture(scope="module")
def scaled_object() -> dict[str, Any]:
    (document,) = _load_all("keda.yaml")
    return document


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana-dashboard.json").read_text())


def _pods(manifest: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, pod template) of every workload: Deployments and Jobs."""
    for doc in manifest:
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]


# --- compose.yaml ----------------------------------------------------------------------


def test_compose_yaml_follows_the_compose_specification() -> None:
    checker = shutil.which("check-jsonschema", path=str(BIN))
    assert checker is not None, "check-jsonschema is a test dependency"
    outcome = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(ROOT / "compose.yaml")],
        capture_output=True,
        text=True,
    )
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr


def test_the_worker_service_can_be_scaled(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    # A fixed container name or host port would stop `--scale worker=4`.
    assert "container_name" not in worker and "ports" not in worker


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_run_commands_that_exist_with_database_and_broker(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    assert service["command"][0] in load_all_commands()
    environment = service["environment"]
    assert environment["RESOLWE_STORAGE_BROKER"].startswith("redis://redis:")
    assert environment["RESOLWE_STORAGE_DATABASE"].startswith("postgresql://")
    assert "@postgres:5432/" in environment["RESOLWE_STORAGE_DATABASE"]


def test_the_deployed_configuration_loads_with_the_services_environment(
    compose: dict[str, Any],
) -> None:
    environment = compose["services"]["worker"]["environment"]
    config = load_config(
        DEPLOY / "config.yaml",
        environ={
            "RESOLWE_STORAGE_DATABASE": "postgresql://storage:pw@postgres:5432/storage",
            "RESOLWE_STORAGE_BROKER": environment["RESOLWE_STORAGE_BROKER"],
        },
    )
    assert config.broker == "redis://redis:6379/0" and set(config.connectors) >= {"local"}


def test_only_the_dashboard_is_published_and_only_on_the_hosts_loopback(
    compose: dict[str, Any],
) -> None:
    published = {
        name: service["ports"]
        for name, service in compose["services"].items()
        if service.get("ports")
    }
    assert set(published) == {"dashboard"}
    port = _serving_port(compose["services"]["dashboard"]["command"])
    assert published["dashboard"] == [f"127.0.0.1:{port}:{port}"]


@pytest.mark.parametrize("name", sorted(SERVED_PORTS))
def test_compose_services_serve_health_where_their_healthcheck_looks(
    compose: dict[str, Any], name: str
) -> None:
    command = compose["services"][name]["command"]
    port = _serving_port(command)
    assert port == SERVED_PORTS[name]
    probe = compose["services"][name]["healthcheck"]["test"]
    assert probe[:3] == ["CMD", "python", "-c"]
    assert f"urlopen('http://127.0.0.1:{port}/healthz'" in probe[3]


def test_the_image_owns_the_data_directory_as_the_user_it_runs_as() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    (user,) = [line.split()[1] for line in lines if line.startswith("USER ")]
    chown = next(i for i, line in enumerate(lines) if f"chown {user}:{user} /data" in line)
    # A named volume at /data takes the ownership the image gives the directory.
    assert "mkdir -p /data" in lines[chown] and chown < lines.index(f"USER {user}")


def test_the_image_builds_with_the_setuptools_the_project_asks_for() -> None:
    """The Dockerfile's ``pip install .`` builds with the build system's setuptools: a
    license given as an SPDX expression (a string) is read from setuptools 77 on, and
    an older one refuses the file (65.5: "`project.license` must be valid exactly by
    one definition"), so a build that took one the bound allows would fail."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    if not isinstance(project["project"].get("license"), str):
        return
    (setuptools,) = [
        Requirement(text)
        for text in project["build-system"]["requires"]
        if Requirement(text).name == "setuptools"
    ]
    lowest = [Version(spec.version) for spec in setuptools.specifier if spec.operator == ">="]
    assert lowest and max(lowest) >= Version("77"), str(setuptools)


# --- deploy/kubernetes.yaml and deploy/hpa.yaml ------------------------------------------


@pytest.mark.parametrize(
    "version",
    sorted({kubernetes_validate.utils.all_versions()[0], kubernetes_validate.latest_version()}),
)
def test_the_kubernetes_manifests_follow_the_kubernetes_api(version: str) -> None:
    validator = shutil.which("kubernetes-validate", path=str(BIN))
    assert validator is not None, "kubernetes-validate is a test dependency"
    outcome = subprocess.run(
        [
            validator,
            "--strict",
            "--kubernetes-version",
            version,
            str(DEPLOY / "kubernetes.yaml"),
            str(DEPLOY / "hpa.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    output = outcome.stdout + outcome.stderr
    assert outcome.returncode == 0, output
    # A kind without a schema (a CRD, a typo in `kind`) is only a warning there.
    assert "WARN" not in output and "ERROR" not in output, output


def test_kubernetes_validation_rejects_a_misspelled_field(
    deployments: dict[str, dict[str, Any]],
) -> None:
    version = kubernetes_validate.latest_version()
    worker = deployments["resolwe-storage-worker"]
    kubernetes_validate.validate(worker, version, strict=True)
    planted = copy.deepcopy(worker)
    context = planted["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context["readOnlyRootFileSystem"] = context.pop("readOnlyRootFilesystem")
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(planted, version, strict=True)


def test_the_kubernetes_manifest_runs_the_scheduler_workers_and_dashboard(
    manifest: list[dict[str, Any]], deployments: dict[str, dict[str, Any]]
) -> None:
    assert set(deployments) == {
        "resolwe-storage-scheduler",
        "resolwe-storage-worker",
        "resolwe-storage-dashboard",
    }
    assert deployments["resolwe-storage-scheduler"]["spec"]["replicas"] == 2
    (migrate,) = _named(manifest, "Job").values()
    assert migrate["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    for _, pod in _pods(manifest):
        for container in pod["spec"]["containers"]:
            assert container["args"][0] in load_all_commands()
            names = {variable["name"] for variable in container["env"]}
            assert {"RESOLWE_STORAGE_BROKER", "RESOLWE_STORAGE_DATABASE"} <= names
            for variable in container["env"]:
                secret = variable.get("valueFrom", {}).get("secretKeyRef")
                if secret:
                    assert secret["name"] == "resolwe-storage"
                    assert secret["key"] in ("database-url", "dashboard-token")


@pytest.mark.parametrize(
    "name", ["resolwe-storage-scheduler", "resolwe-storage-worker", "resolwe-storage-dashboard"]
)
def test_deployments_are_probed_and_scraped_on_the_port_they_serve(
    deployments: dict[str, dict[str, Any]], name: str
) -> None:
    template = deployments[name]["spec"]["template"]
    (container,) = template["spec"]["containers"]
    port = _serving_port(container["args"])
    assert port == SERVED_PORTS[container["args"][0]]
    named_ports = {entry.get("name"): entry["containerPort"] for entry in container["ports"]}
    assert port in named_ports.values()
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        request = container[probe]["httpGet"]
        assert request["path"] == path
        assert named_ports.get(request["port"], request["port"]) == port
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_every_pod_and_container_runs_unprivileged_with_resources(
    manifest: list[dict[str, Any]],
) -> None:
    pods = dict(_pods(manifest))
    assert len(pods) == 4
    for name, pod in pods.items():
        spec = pod["spec"]
        assert spec["securityContext"] == POD_SECURITY, name
        temporary = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
        for container in spec["containers"]:
            assert container["securityContext"] == CONTAINER_SECURITY, name
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[bound]), (name, bound)
            # A read-only root needs a writable /tmp (Prometheus multiprocess files).
            assert any(
                mount["mountPath"] == "/tmp" and mount["name"] in temporary
                for mount in container["volumeMounts"]
            ), name


def test_the_data_volume_is_mounted_where_the_connectors_keep_their_files(
    manifest: list[dict[str, Any]],
    deployments: dict[str, dict[str, Any]],
    deployed_config_path: Path,
) -> None:
    config = load_config(deployed_config_path, environ=ENVIRON)
    paths = [
        Path(connector.settings.path)
        for connector in config.connectors.values()
        if connector.kind == "local"
    ]
    assert paths
    claims = _named(manifest, "PersistentVolumeClaim")
    for name in ("resolwe-storage-worker", "resolwe-storage-scheduler"):
        spec = deployments[name]["spec"]["template"]["spec"]
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        (container,) = spec["containers"]
        for path in paths:
            mount = next(
                (
                    mount
                    for mount in container["volumeMounts"]
                    if path.is_relative_to(mount["mountPath"]) and mount["mountPath"] != "/"
                ),
                None,
            )
            assert mount is not None, f"{name} mounts no volume at {path}"
            assert not mount.get("readOnly", False), (name, path)
            claim = claims[volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]]
            # Workers on any node write the same local connectors.
            assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_config_map_holds_a_configuration_that_loads_and_copies(
    deployed_config_path: Path,
) -> None:
    config = load_config(deployed_config_path, environ=ENVIRON)
    policies = config.policies
    assert any(policy.copy is not None for policy in policies.values())
    assert any(policy.delete is not None for policy in policies.values())
    # It is the configuration that compose runs, too.
    assert policies == load_config(DEPLOY / "config.yaml", environ=ENVIRON).policies


def test_workers_get_time_to_finish_their_jobs(deployments: dict[str, dict[str, Any]]) -> None:
    grace = deployments["resolwe-storage-worker"]["spec"]["template"]["spec"]
    # A stopped worker lets running jobs finish for up to 30 s.
    assert grace["terminationGracePeriodSeconds"] > 30


def test_disruption_budgets_cover_the_workers_and_the_scheduler(
    manifest: list[dict[str, Any]], deployments: dict[str, dict[str, Any]]
) -> None:
    budgets = _named(manifest, "PodDisruptionBudget").values()
    for name in ("resolwe-storage-worker", "resolwe-storage-scheduler"):
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert any(
            budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
            for budget in budgets
        ), name


def test_the_dashboard_is_read_only_and_reached_through_its_service(
    manifest: list[dict[str, Any]], deployments: dict[str, dict[str, Any]]
) -> None:
    template = deployments["resolwe-storage-dashboard"]["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["args"] == ["dashboard", "--bind", "0.0.0.0:8080"]
    token = next(v for v in container["env"] if v["name"] == "RESOLWE_STORAGE_DASHBOARD_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["optional"] is True
    service = _named(manifest, "Service")["resolwe-storage-dashboard"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    named_ports = {entry["name"]: entry["containerPort"] for entry in container["ports"]}
    (port,) = service["spec"]["ports"]
    assert port["port"] == 8080
    assert named_ports.get(port["targetPort"], port["targetPort"]) == 8080


def test_the_hpa_scales_the_worker_deployment(deployments: dict[str, dict[str, Any]]) -> None:
    (hpa,) = _load_all("hpa.yaml")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "resolwe-storage-worker")
    assert target["name"] in deployments
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


# --- deploy/keda.yaml ----------------------------------------------------------------------


def _dropped_keys(given: Any, kept: Any, where: str = "") -> list[str]:
    """Keys of ``given`` that validation ignored: absent from the model's dump ``kept``."""
    if isinstance(given, dict) and isinstance(kept, dict):
        return [
            dropped
            for key, value in given.items()
            for dropped in (
                _dropped_keys(value, kept[key], f"{where}.{key}")
                if key in kept
                else [f"{where}.{key}"]
            )
        ]
    if isinstance(given, list) and isinstance(kept, list):
        return [
            dropped
            for index, (value, other) in enumerate(zip(given, kept, strict=True))
            for dropped in _dropped_keys(value, other, f"{where}[{index}]")
        ]
    return []


def _validate_scaled_object(document: dict[str, Any]) -> None:
    """Validate against KEDA's ScaledObject schema, rejecting unknown fields.

    The models ignore unknown fields (as the API server prunes them), so a
    misspelled field would pass silently: compare the input with what the
    model kept.
    """
    model = ScaledObject.model_validate(document)
    kept = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    dropped = _dropped_keys(document, kept)
    if dropped:
        raise ValueError(f"unknown fields: {', '.join(dropped)}")


def test_the_keda_scaled_object_follows_kedas_schema(scaled_object: dict[str, Any]) -> None:
    _validate_scaled_object(scaled_object)


@pytest.mark.parametrize(
    ("mistake", "error"),
    [
        (lambda spec: spec.update(minReplicaCunt=1), ValueError),
        (
            lambda spec: spec["triggers"][0].update(metdata=spec["triggers"][0].pop("metadata")),
            ValueError,
        ),
        (lambda spec: spec["triggers"][0]["metadata"].update(listLength=5), ValidationError),
        (lambda spec: spec.pop("scaleTargetRef"), ValidationError),
    ],
    ids=["misspelled-field", "misspelled-nested-field", "not-a-string", "missing-target"],
)
def test_keda_validation_rejects_a_planted_mistake(
    scaled_object: dict[str, Any], mistake: Any, error: type[Exception]
) -> None:
    planted = copy.deepcopy(scaled_object)
    mistake(planted["spec"])
    with pytest.raises(error):
        _validate_scaled_object(planted)


def test_keda_scales_the_workers_on_the_three_queues(
    scaled_object: dict[str, Any], deployments: dict[str, dict[str, Any]]
) -> None:
    spec = scaled_object["spec"]
    assert spec["scaleTargetRef"]["name"] == "resolwe-storage-worker"
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["cooldownPeriod"] > 0
    triggers = spec["triggers"]
    assert {trigger["type"] for trigger in triggers} == {"redis"}
    names = [trigger["metadata"]["listName"] for trigger in triggers]
    assert sorted(names) == sorted(f"dramatiq:{queue}" for queue in QUEUES)
    # The lists live on the workers' broker.
    (container,) = deployments["resolwe-storage-worker"]["spec"]["template"]["spec"]["containers"]
    broker = next(v["value"] for v in container["env"] if v["name"] == "RESOLWE_STORAGE_BROKER")
    address, _, database = broker.removeprefix("redis://").partition("/")
    host, _, port = address.rpartition(":")
    for trigger in triggers:
        metadata = trigger["metadata"]
        # KEDA resolves the name in its own namespace: redis.NAMESPACE.svc is the same host.
        trigger_host, _, trigger_port = metadata["address"].rpartition(":")
        assert (trigger_host.split(".")[0], trigger_port) == (host, port)
        assert metadata.get("databaseIndex", "0") == (database or "0")
        assert int(metadata["listLength"]) > 0


# --- deploy/grafana-dashboard.json -----------------------------------------------------------


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included, rows themselves excluded."""
    panels = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            panels.extend(panel.get("panels", []))
        else:
            panels.append(panel)
    return panels


def _expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in _panels(dashboard) for target in panel["targets"]]


def _metric_names(dashboard: dict[str, Any]) -> set[str]:
    return {name for expr in _expressions(dashboard) for name in METRIC_NAME.findall(expr)}


def test_the_grafana_dashboard_has_the_shape_of_a_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] and dashboard["uid"]
    assert dashboard["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    every_panel = dashboard["panels"] + [
        nested for panel in dashboard["panels"] for nested in panel.get("panels", [])
    ]
    ids = [panel["id"] for panel in every_panel]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    panels = _panels(dashboard)
    assert len(panels) >= 15
    for panel in every_panel:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
    for panel in panels:
        assert panel["title"] and panel["targets"], panel["id"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]


def test_the_grafana_dashboard_queries_are_promql(dashboard: dict[str, Any]) -> None:
    for expr in _expressions(dashboard):
        promql_parser.parse(expr)
        if "histogram_quantile" in expr:
            assert "_bucket[" in expr and re.search(r"by \(le\b", expr), expr


def test_a_broken_query_is_caught() -> None:
    with pytest.raises(ValueError):
        promql_parser.parse("sum by (queue (resolwe_storage_queue_jobs)")


def test_the_grafana_dashboard_uses_only_metrics_the_code_exports(
    dashboard: dict[str, Any],
) -> None:
    from resolwe_storage.telemetry import exported_metric_names

    unknown = _metric_names(dashboard) - set(exported_metric_names())
    assert not unknown, f"the dashboard queries metrics nobody exports: {sorted(unknown)}"


def test_the_grafana_dashboard_covers_jobs_bytes_queues_copies_and_losses(
    dashboard: dict[str, Any],
) -> None:
    used = _metric_names(dashboard)
    assert {
        "resolwe_storage_jobs_total",
        "resolwe_storage_job_bytes_total",
        "resolwe_storage_job_files_total",
        "resolwe_storage_job_duration_seconds_bucket",
        "resolwe_storage_queue_jobs",
        "resolwe_storage_queue_oldest_job_age_seconds",
        "resolwe_storage_copies",
        "resolwe_storage_copy_bytes",
        "resolwe_storage_lost_items",
        "resolwe_storage_damaged_items",
        "resolwe_storage_under_replicated_items",
        "resolwe_storage_workers_alive",
        "resolwe_storage_deletes_paused",
        "resolwe_storage_scan_duration_seconds_bucket",
        "resolwe_storage_scan_deletes_held",
    } <= used


def test_replicated_gauges_are_taken_once_not_summed(dashboard: dict[str, Any]) -> None:
    for expr in _expressions(dashboard):
        for name in REPLICATED_GAUGES & set(METRIC_NAME.findall(expr)):
            uses = len(re.findall(rf"\b{name}\b", expr))
            under_max = len(re.findall(rf"\bmax(?:\s+by\s*\([^)]*\))?\s*\(\s*{name}\b", expr))
            assert uses == under_max, f"{name} outside max(...) in {expr}"


def test_lost_items_turn_the_dashboard_red(dashboard: dict[str, Any]) -> None:
    (panel,) = [
        panel
        for panel in _panels(dashboard)
        if panel["type"] == "stat"
        and any("resolwe_storage_lost_items" in target["expr"] for target in panel["targets"])
    ]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    red = [step["value"] for step in steps if step["color"] == "red"]
    assert red and 0 < min(red) <= 1
    assert steps[0]["color"] == "green"
