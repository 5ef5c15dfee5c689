"""The command line as a package: every entry point offers every command."""

from __future__ import annotations

import re
import subprocess
import sys

import click

from resolwe_storage.cli import COMMAND_MODULES, cli

#: SPEC §6 and the issues since: what users script against.
COMMANDS = {
    "import",
    "ingest",
    "migrate",
    "plan",
    "queues",
    "request",
    "run",
    "scan",
    "scheduler",
    "status",
    "url",
    "verify",
    "worker",
    "show",
    "history",
    "deletes",
    "check-config",
    "audit",
    "remove",
    "restore",
    "dashboard",
    "export",
}


def listed(help_text: str) -> set[str]:
    """The command names of a click group's --help."""
    section = help_text.split("Commands:", 1)[1]
    return {match.group(1) for match in re.finditer(r"^  (\S+)", section, re.MULTILINE)}


def test_every_entry_point_offers_every_command() -> None:
    for module in ("resolwe_storage", "resolwe_storage.cli"):
        done = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert listed(done.stdout) == COMMANDS, module


def test_each_command_is_registered_by_its_own_module() -> None:
    owners = {
        name: command.callback.__module__
        for name, command in cli.commands.items()
        if command.callback is not None
    }
    assert set(owners) == COMMANDS
    modules = {module.__name__ for module in COMMAND_MODULES}
    assert set(owners.values()) == modules  # each module registers something
    assert isinstance(cli.commands["request"], click.Group)
