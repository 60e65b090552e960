"""The README's configuration reference matches the configuration's definition."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from cinnamon_pool.config import ENV_VARIABLES, PoolConfig

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_configuration_key_is_documented_and_no_documented_key_is_gone() -> None:
    defined = {
        f"{section.name}.{key.name}"
        for section in dataclasses.fields(PoolConfig)
        for key in dataclasses.fields(section.type if isinstance(section.type, type) else getattr(PoolConfig(), section.name))
    }
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", README, flags=re.MULTILINE))
    assert defined - documented == set(), "keys missing from the README's configuration table"
    assert documented - defined == set(), "the README documents keys that do not exist"


def test_every_environment_variable_is_documented_next_to_its_key() -> None:
    for variable, dotted in ENV_VARIABLES.items():
        assert re.search(rf"^\| `{re.escape(dotted)}` \|[^\n]*`{variable}`", README, flags=re.MULTILINE), f"{variable} ({dotted})"


def test_every_log_action_is_in_the_runbook() -> None:
    root = Path(__file__).resolve().parents[2]
    sources = "".join((root / "cinnamon_pool" / p).read_text() for p in ("supervisor/loop.py", "supervisor/journal.py", "logs/events.py"))
    actions = set(re.findall(r'"([A-Z]+(?:_[A-Z]+)+)"', sources)) | {"MARKED_DRAINING", "MARKED_UNHEALTHY", "ALLOCATED", "RELEASED"}
    runbook = (root / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"^\| ([A-Z_ /]+) \|", runbook, flags=re.MULTILINE))
    documented = {name.strip() for row in documented for name in row.split("/")}
    assert actions - documented == set(), "log actions missing from docs/operations.md"
