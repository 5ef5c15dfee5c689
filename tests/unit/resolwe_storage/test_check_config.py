"""``check-config`` in a process of its own; the shipped configurations have nothing futile."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from resolwe_storage.config import build_config, load_config
from scheduler.rules import ineffective_rules
from tests.processes import Cli

ROOT = Path(__file__).resolve().parents[3]


def test_check_config_names_what_cannot_work_and_fails(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "connectors:\n"
        "  local: {connector: local, config: {priority: 0, path: l, delete: {delay: 2}}}\n"
        "  S3: {connector: s3, config: {priority: 10, bucket: b, copy: {delay: 1}}}\n"
    )
    cli = Cli(config)
    outcome = cli("check-config")
    assert (
        outcome.out.splitlines()[0] == f"{config}: 2 connector(s), most preferred first: local, S3"
    )
    assert "warning: connectors.local.config.delete never applies" in outcome.out
    assert outcome.error_line == "error: 1 rule(s) of the configuration can never apply"
    shown = json.loads(cli("check-config", "--json").out)
    assert shown["connectors"] == ["local", "S3"] and len(shown["warnings"]) == 1
    # The processes that decide say so when they start, and go on.
    planned = cli.ok("plan")
    assert "configuration: connectors.local.config.delete never applies" in planned.err

    config.write_text(
        "connectors:\n"
        "  local: {connector: local, config: {priority: 0, path: l}}\n"
        "  S3: {connector: s3, config: {priority: 10, bucket: b, copy: {delay: 1},"
        " delete: {delay: 9}}}\n"
    )
    assert cli.ok("check-config").out.count("warning") == 0
    assert "configuration:" not in cli.ok("plan").err


def test_a_broken_configuration_is_one_error_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("connectors: {local: {connector: local, config: {paht: x}}}\n")
    line = Cli(config)("check-config").error_line
    assert "connectors.local.config.path: required key is missing" in line


def readme_config() -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(r"```yaml\n(database: .*?)```", text, re.DOTALL).group(1)  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["examples/config.yaml", "deploy/config.yaml", "README.md"])
def test_the_shipped_configurations_have_no_rule_that_cannot_apply(name: str) -> None:
    if name == "README.md":
        config = build_config(yaml.safe_load(readme_config()), environ={})
    else:
        config = load_config(ROOT / name, environ={})
    assert ineffective_rules(config.policies) == []
