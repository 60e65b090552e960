"""A gateway stand: a real `cinnamon-pool gateway` process in front of a fake-mcp server on the
slot's port, with a real redis-server (the fixture ``stand`` in conftest.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import Grant, Holder
from tests.support import wait_for_http

BIN = Path(sys.executable).parent
HOST = "gw-host"
HEADER_TIMEOUT_S = 3
PER_CLIENT = 200  # the stand's gateway.max_connections_per_client
UPSTREAM_TIMEOUT_S = 4
STREAMS_PER_LEASE = 4
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@dataclass
class Stand:
    """A gateway, the one container behind it (fake-mcp on the slot's port) and the lease store."""

    base: str  # the gateway's base URL
    fake: str  # fake-mcp's own URL (for its /_fake/* control routes)
    store: LeaseStore
    config: PoolConfig
    logs: Path
    gateway: subprocess.Popen[bytes]
    env: dict[str, str]
    gateway_log: Path  # every gateway process of this stand writes its stderr here

    def restart_gateway(self) -> None:
        self.gateway.terminate()
        self.stopped_within(15)
        self.gateway = start_gateway(self.env, self.gateway_log)
        wait_for_http(f"{self.base}/metrics")

    def stopped_within(self, seconds: float) -> int:
        """The gateway's exit status once it stops; if it is still running after ``seconds``, its
        every thread's stack (SIGUSR1, faulthandler) and log go into the failure."""
        try:
            return self.gateway.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.gateway.send_signal(signal.SIGUSR1)
            time.sleep(1)
            pytest.fail(f"the gateway did not stop within {seconds} s; its stderr:\n{self.gateway_log.read_text()[-6000:]}")

    @property
    def endpoint(self) -> str:
        return self.config.gateway.endpoint(self.config.pool.name, "container-001")

    def grant(self, run: str = "run") -> Grant:
        return self.store.acquire(Holder(run), timeout_s=2)

    def calls(self) -> list[dict[str, object]]:
        """The tool calls that reached the container on behalf of a job (with a lease token); the
        gateway's own keeper and prepared sessions carry none."""
        calls = httpx.get(f"{self.fake}/_fake/state", timeout=5).json()["calls"]
        return [call for call in calls if call.get("token")]

    def post(self, body: object, token: str | None, url: str | None = None, **headers: str) -> httpx.Response:
        sent = {**MCP_HEADERS, **headers, **({"Authorization": f"Bearer {token}"} if token else {})}
        return httpx.post(url or self.endpoint, content=json.dumps(body), headers=sent, timeout=10)

    def pool_log(self) -> str:
        return "".join(p.read_text() for p in sorted((self.logs / "containers").glob("container-pool-*.log")))


def initialize(request_id: int = 1) -> dict[str, object]:
    return {
        "jsonrpc": "2.0", "id": request_id, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }  # fmt: skip


def start_gateway(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:
        return subprocess.Popen([str(BIN / "cinnamon-pool"), "gateway"], env=env, stdout=subprocess.DEVNULL, stderr=stderr)


def gateway_metric(stand: Stand, name: str) -> dict[str, float]:
    """The gateway's samples of one metric, by their label text."""
    text = httpx.get(f"{stand.base}/metrics", timeout=5).text
    return {
        line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")
    }
