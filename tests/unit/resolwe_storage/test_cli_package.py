"""The command line as a package: every entry point offers every command."""

from __future__ import annotations

import re
import subprocess
import sys

import click

from resolwe_storage.cli.base import COMMANDS as TABLE
from resolwe_storage.cli.base import load_all_commands

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
    commands = load_all_commands()
    owners = {
        name: command.callback.__module__
        for name, command in commands.items()
        if command.callback is not None
    }
    assert set(owners) == COMMANDS
    assert isinstance(commands["request"], click.Group)
    # The table the group loads commands from, and --help lists them from,
    # says what the modules declare.
    assert {name: module for name, (module, _) in TABLE.items()} == {
        name: owner.rsplit(".", 1)[1] for name, owner in owners.items()
    }
    assert {name: line for name, (_, line) in TABLE.items()} == {
        name: command.get_short_help_str(10_000) for name, command in commands.items()
    }


def test_a_command_imports_its_own_module_and_no_other() -> None:
    code = (
        "import sys\n"
        "from resolwe_storage.cli import main\n"
        "main(['request', '--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('resolwe_storage.cli.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = done.stdout.strip().splitlines()[-1]
    assert loaded == "['resolwe_storage.cli.base', 'resolwe_storage.cli.requests']"
