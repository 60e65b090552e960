"""The pool as users run it: real `cinnamon-pool supervise` and `cinnamon-pool gateway` processes
from a TOML file, real playwright-mcp containers, a real redis-server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import redis

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.pool import ContainerPool
from tests.conftest import test_config
from tests.support import free_port

BIN = Path(sys.executable).parent
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE: dict[str, Any] = {
    "jsonrpc": "2.0", "id": 41, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}  # fmt: skip


class Supervised(NamedTuple):
    config: PoolConfig
    env: dict[str, str]
    logs: Path
    supervisor: subprocess.Popen[bytes]
    gateways: list[subprocess.Popen[bytes]]  # the running one last

    def restart_gateway(self) -> None:
        """SIGTERM the gateway and start a new one from the same file."""
        self.gateways[-1].send_signal(signal.SIGTERM)
        self.gateways[-1].wait(timeout=30)
        self.gateways.append(gateway_process(self.env))


def gateway_process(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([BIN / "cinnamon-pool", "gateway"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def write_config(
    config: PoolConfig,
    path: Path,
    logs: Path,
    *,
    rules: str = "",
    command: list[str] | None = None,
    gateway: bool = True,
    container: str = "",
) -> Path:
    """The pool's TOML file; ``rules``: more lines of [rules]; ``command``: the containers'
    command; ``container``: more lines of [container]; ``gateway=False``: direct mode (no gateway)."""
    container_command = "" if command is None else f"command = {json.dumps(command)}\n"
    c, size = config.container, config.pool.initial_size
    path.write_text(
        f'[redis]\nurl = "{config.redis.url}"\n'
        f'[pool]\nname = "{config.pool.name}"\nmin_size = {size}\nmax_size = {size}\ninitial_size = {size}\n'
        f'[container]\nimage = "{c.image}"\nvolumes = ["/usr:/usr:ro"]\nnetwork = "{c.network}"\nhost_port_range = "{c.host_port_range}"\n'
        + container_command
        + container
        + f"[rules]\ntick_s = 0.5\n{rules}"
        f'[logs]\ndir = "{logs}"\n[metrics]\nport = 0\n[gateway]\nlisten = "{f"127.0.0.1:{free_port()}" if gateway else ""}"\n'
    )
    return path


@pytest.fixture(params=[2])
def supervised_pool(
    request: pytest.FixtureRequest,
    real_redis: redis.Redis,
    redis_server: str,
    pool_cleanup: str,
    test_network: str,
    playwright_image: str,
    tmp_path: Path,
) -> Iterator[Supervised]:
    """``request.param``: the pool size, or ``{"size": n, "rules": TOML lines, "command": [...],
    "container": TOML lines, "gateway": False}``."""
    options = request.param if isinstance(request.param, dict) else {"size": request.param}
    size, with_gateway = int(options["size"]), bool(options.get("gateway", True))
    config = test_config(pool_cleanup, redis_server, image=playwright_image, network=test_network, size=size)
    logs = tmp_path / "logs"
    env = {
        **os.environ,
        "CINNAMON_CONFIG": str(
            write_config(
                config,
                tmp_path / "pool.toml",
                logs,
                rules=options.get("rules", ""),
                command=options.get("command"),
                gateway=with_gateway,
                container=options.get("container", ""),
            )
        ),
    }
    log = (tmp_path / "supervise.log").open("w")
    supervisor = subprocess.Popen([BIN / "cinnamon-pool", "supervise"], env=env, stdout=log, stderr=subprocess.STDOUT)
    gateways = [gateway_process(env)] if with_gateway else []
    config = PoolConfig.load(env["CINNAMON_CONFIG"])
    try:
        pool = ContainerPool(config)
        deadline = time.monotonic() + 60
        while pool.status()["available"] < size:
            assert supervisor.poll() is None, (tmp_path / "supervise.log").read_text()
            assert time.monotonic() < deadline, f"the supervisor did not bring up {size} containers in 60 s"
            time.sleep(0.1)
        yield Supervised(config, env, logs, supervisor, gateways)
    finally:
        for process in (supervisor, *gateways):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
        log.close()


def prepared_on(pool: ContainerPool, name: str, timeout_s: float = 60) -> dict[str, Any]:
    """Wait until ``name`` is free with a keeper and a prepared session; the prepared one's entry."""
    deadline = time.monotonic() + timeout_s
    keys = PoolKeys(pool.name)
    while time.monotonic() < deadline:
        status = {c["name"]: c for c in pool.status()["containers"]}
        container = status.get(name)
        if container and container["state"] == "available":
            held = pool.store.held_sessions({name: (container["container_id"], container["restarts"])})[name]
            if held == {"keeper", "prepared"}:
                raw = pool.store.redis.hget(keys.sessions, f"prepared|{name}")
                if raw is not None:
                    return dict(json.loads(raw))
        time.sleep(0.1)
    raise AssertionError(f"{name} had no prepared session within {timeout_s} s: {pool.status()}")
