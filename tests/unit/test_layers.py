"""Imports point down the layers of STYLE.md; only the Docker adapter imports docker, only lease/ and
connect.py import redis."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "cinnamon_pool"
LAYERS = {
    1: [
        "errors",
        "safefiles",
        "clock",
        "backoff",
        "console",
        "model",
        "tokens",
        "events",
        "decode",
        "config.container",
        "config.sections",
        "config.load",
        "keys",
        "logs.format",
        "logs.actions",
        "logs.report",
        "logs.stats",
        "logs.advice",
        "lease.scripts",
        "runtime.base",
        "canary",
        "lease.replication",
        "gateway.tasks",
        "gateway.toolcalls",
        "gateway.streams",
        "gateway.metrics",
        "gateway.unsafe",
        "gateway.inprocess",
        "gateway.traces",
        "mcpwire",
    ],
    2: [
        "supervisor.chores",
        "lease.redis_errors",
        "endpoints",
        "door",
        "supervisor.reconcile",
        "supervisor.rules",
        "supervisor.state",
        "logs.events",
        "logs.analyzer",
        "logs.html",
    ],
    3: [
        "lease.calls",
        "lease.client",
        "lease.jobside",
        "lease.admin",
        "lease.reads",
        "lease.stream",
        "lease.store",
        "lease.handle",
        "lease.heartbeat",
        "runtime.docker",
        "runtime.seccomp",
        "runtime.egress",
        "health",
        "logs.writer",
        "logs.files",
        "browser",
        "gateway.auth",
        "gateway.proxy",
        "gateway.forward",
        "gateway.protocol",
        "gateway.upstream",
        "gateway.prepare",
        "gateway.sessions",
        "gateway.codeguard",
        "gateway.said",
        "connect",
        "lease.apikeys",
        "lease.aio",
        "lease.gatewayside",
        "dashboard.runs",
        "dashboard.pages",
    ],
    4: [
        "pool",
        "job",
        "gateway.connect",
        "gateway.app",
        "supervisor.loop",
        "supervisor.upkeep",
        "supervisor.judge",
        "supervisor.observe",
        "supervisor.actuator",
        "supervisor.election",
        "supervisor.journal",
        "supervisor.metrics",
        "doctor",
    ],
    5: ["worker", "operator", "dashboard.app", "supervisor.app", "gateway.server", "dashboard.server"],
    6: ["cli.main", "cli.parser", "cli.commands", "cli.operate", "cli.daemons", "cli.render", "cli.__main__"],
}
LAYER_OF = {module: layer for layer, modules in LAYERS.items() for module in modules}
PURE = {
    "supervisor.chores",
    "decode",
    "events",
    "supervisor.state",
    "supervisor.reconcile",
    "supervisor.rules",
    "logs.analyzer",
    "logs.stats",
    "logs.advice",
    "logs.html",
    "logs.events",
    "logs.format",
    "logs.actions",
    "logs.report",
    "model",
    "keys",
    "config.container",
    "config.sections",
    "config.load",
    "runtime.base",
    "canary",
    "lease.replication",
    "mcpwire",
}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).with_suffix("")
        if relative.name == "__init__":
            continue
        found[".".join(relative.parts)] = path
    return found


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_every_module_has_a_layer() -> None:
    assert set(modules()) == set(LAYER_OF), "add new modules to LAYERS in this test"


def test_imports_point_downward() -> None:
    upward = []
    for module, path in modules().items():
        for name in imports(path):
            if name.startswith("cinnamon_pool."):
                target = name.removeprefix("cinnamon_pool.")
                if target in LAYER_OF and LAYER_OF[target] > LAYER_OF[module]:
                    upward.append(f"{module} (layer {LAYER_OF[module]}) imports {target} (layer {LAYER_OF[target]})")
    assert upward == []


def test_pure_modules_import_no_io_library() -> None:
    io_libraries = {"redis", "docker", "loguru", "httpx", "httpx2", "mcp", "requests", "rq"}
    offenders = [(m, n) for m in PURE for n in imports(modules()[m]) if n.split(".")[0] in io_libraries]
    assert offenders == []


def test_only_the_docker_adapter_imports_docker() -> None:
    importers = sorted(m for m, p in modules().items() if any(n.split(".")[0] == "docker" for n in imports(p)))
    assert importers == ["runtime.docker"]


def test_only_lease_and_connect_import_redis() -> None:
    """Redis has one owner: ``connect.py`` makes the clients, ``lease/`` runs every command and
    translates every error (lease/redis_errors.py); the rest sees the project's own types."""
    importers = sorted(m for m, p in modules().items() if any(n.split(".")[0] == "redis" for n in imports(p)))
    assert importers, "lease/ and connect.py import it (the test sees imports)"
    assert [m for m in importers if not (m == "connect" or m.startswith("lease."))] == []


REDIS_CLIENT_MAKERS = {"Redis", "RedisCluster", "Sentinel", "StrictRedis", "from_url", "from_pool", "ConnectionPool"}


def test_only_connect_makes_redis_clients() -> None:
    """Every part reaches the pool's Redis the same way (one server, the primary Sentinel names,
    or the primary of the pool's slot in a cluster): a client made anywhere else would skip it."""
    makers = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if called in REDIS_CLIENT_MAKERS:
                    makers.append(f"{module}:{node.lineno} {called}")
    assert all(maker.startswith("connect:") for maker in makers), makers
    assert makers, "connect.py makes them (the test sees calls)"


def test_the_package_imports_lazily() -> None:
    """The supervisor's pure parts, and the package itself, load neither mcp nor rq."""
    import subprocess
    import sys

    code = (
        "import sys, cinnamon_pool.supervisor.reconcile, cinnamon_pool.decode; "
        "assert cinnamon_pool.PoolConfig.__name__ == 'PoolConfig'; "
        "print(sorted(m for m in ('mcp', 'rq', 'httpx', 'docker') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"loaded on import: {result.stdout}"
    every = subprocess.run(
        [sys.executable, "-c", "import cinnamon_pool as c; print(all(getattr(c, n) for n in c.__all__))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert every.stdout.strip() == "True", "every name in __all__ resolves"
