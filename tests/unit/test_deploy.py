"""compose.yaml and the Kubernetes manifest: valid, and in step with the command line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from resolwe_storage.cli import cli
from resolwe_storage.config import load_config

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("migrate", "scheduler", "worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_yaml_follows_the_compose_specification() -> None:
    checker = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
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
    assert service["command"][0] in cli.commands
    environment = service["environment"]
    assert environment["RESOLWE_STORAGE_BROKER"].startswith("redis://redis:")
    assert environment["RESOLWE_STORAGE_DATABASE"].startswith("postgresql://")
    assert "@postgres:5432/" in environment["RESOLWE_STORAGE_DATABASE"]


def test_the_deployed_configuration_loads_with_the_services_environment(
    compose: dict[str, Any],
) -> None:
    environment = compose["services"]["worker"]["environment"]
    config = load_config(
        ROOT / "deploy" / "config.yaml",
        environ={
            "RESOLWE_STORAGE_DATABASE": "postgresql://storage:pw@postgres:5432/storage",
            "RESOLWE_STORAGE_BROKER": environment["RESOLWE_STORAGE_BROKER"],
        },
    )
    assert config.broker == "redis://redis:6379/0" and set(config.connectors) >= {"local"}


def test_the_kubernetes_manifest_runs_the_scheduler_and_workers() -> None:
    documents = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes.yaml").read_text()))
    deployments = {
        doc["metadata"]["name"]: doc["spec"]["template"]["spec"]["containers"][0]
        for doc in documents
        if doc["kind"] == "Deployment"
    }
    assert set(deployments) == {"resolwe-storage-scheduler", "resolwe-storage-worker"}
    for container in deployments.values():
        assert container["args"][0] in cli.commands
        names = {variable["name"] for variable in container["env"]}
        assert {"RESOLWE_STORAGE_BROKER", "RESOLWE_STORAGE_DATABASE"} <= names
    config_map = next(doc for doc in documents if doc["kind"] == "ConfigMap")
    assert yaml.safe_load(config_map["data"]["config.yaml"])["connectors"]
