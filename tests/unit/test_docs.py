"""The README's configuration reference matches the configuration's definition."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

from cinnamon_pool.config import ENV_VARIABLES, PoolConfig
from cinnamon_pool.lease.scripts import Status
from cinnamon_pool.logs.actions import Detail, LogAction

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


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


def test_every_detail_label_is_in_the_runbook_and_every_documented_one_exists() -> None:
    runbook = (ROOT / "docs" / "operations.md").read_text()
    table = runbook.split("## Detail labels", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| ([A-Z][A-Za-z0-9 ]+) \|", table, flags=re.MULTILINE)) - {"label"}
    assert {label.value for label in Detail} == documented


def test_every_log_action_is_in_the_runbook_and_every_documented_one_exists() -> None:
    runbook = (ROOT / "docs" / "operations.md").read_text()
    rows = set(re.findall(r"^\| ([A-Z_ /]+) \|", runbook, flags=re.MULTILINE))
    documented = {name.strip() for row in rows for name in row.split("/")}
    actions = {action.value for action in LogAction}
    assert actions - documented == set(), "log actions missing from docs/operations.md"
    assert documented - actions == set(), "docs/operations.md lists actions the code never writes"


def test_the_code_names_log_actions_only_through_the_vocabulary() -> None:
    """A record's action is a LogAction (mypy holds the writers to it); a bare literal that looks
    like one anywhere in the package would be an action the runbook test cannot see."""
    not_actions = {status.value for status in Status}
    literals = []
    for path in (ROOT / "cinnamon_pool").rglob("*.py"):
        if path.name == "actions.py":
            continue
        tree = ast.parse(path.read_text())
        metavars = {id(k.value) for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg == "metavar"}
        for node in ast.walk(tree):
            if id(node) in metavars:
                continue  # argparse's placeholder names (TEST_RUN_ID)
            value = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
            looks_like_one = re.fullmatch(r"[A-Z]+(?:_[A-Z]+)+", value) and not value.startswith(
                ("CINNAMON_", "K_", "SCMP_")
            )  # (SCMP_: libseccomp names, runtime/seccomp.py)
            if looks_like_one and value not in not_actions:
                literals.append(f"{path.relative_to(ROOT)}: {value}")
    assert literals == [], "write LogAction.<NAME> (cinnamon_pool/logs/actions.py) instead"
