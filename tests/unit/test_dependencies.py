"""What the package imports is what pyproject declares, and only libraries' public API."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib

from tests.conftest import ROOT

PACKAGE = ROOT / "cinnamon_pool"


def imported_modules() -> dict[str, set[str]]:
    """Every module the package imports (absolute), by the file that imports it."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def normalized(distribution: str) -> str:
    """PEP 503: prometheus_client and prometheus-client are one project."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def test_every_third_party_import_is_declared_in_pyproject() -> None:
    declared = {
        normalized(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0])
        for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module, files in imported_modules().items():
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top == "cinnamon_pool":
            continue
        owners = {normalized(name) for name in distributions.get(top, [])}
        if not owners & declared:
            missing[module] = sorted(files)
    assert missing == {}, "imported but not declared in [project] dependencies"


def test_no_private_module_of_a_library_is_imported() -> None:
    private = {
        module: sorted(files)
        for module, files in imported_modules().items()
        if module.split(".")[0] != "cinnamon_pool" and any(part.startswith("_") for part in module.split(".")[1:])
    }
    assert private == {}
