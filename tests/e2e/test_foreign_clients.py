"""Clients nobody here wrote, on a real pool (real `supervise` and `gateway` processes, the real
playwright-mcp in containers): the official TypeScript MCP SDK and a BullMQ worker from npm, and
the official Python `mcp` client with its default options. Each gets a browser of its own from
one URL and an API key.

The npm packages live in tests/e2e/clients (`make clients` installs them)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import IO, Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from cinnamon_pool import decode
from cinnamon_pool.events import EventKind
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.pool import ContainerPool
from tests.e2e.conftest import BIN, Supervised
from tests.support import stream_entries

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.redis]
CLIENTS = Path(__file__).parent / "clients"


@pytest.fixture(autouse=True)
def _npm_clients() -> None:
    if shutil.which("node") is None or not (CLIENTS / "node_modules" / "bullmq").is_dir():
        pytest.fail("the npm clients are not installed: run `make clients` (make test does)")


def new_key(pool: Supervised, name: str) -> str:
    made = subprocess.run([BIN / "cinnamon-pool", "keys", "create", name], env=pool.env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def connect_url(pool: Supervised) -> str:
    return f"{pool.config.gateway.base_url}/{pool.config.pool.name}/mcp"


def holders(pool: Supervised) -> list[str]:
    """The worker field of every lease granted so far, from the events stream."""
    client = ContainerPool(pool.config).store.redis
    events = [decode.event("-", fields) for fields in stream_entries(client, PoolKeys(pool.config.pool.name).events)]
    return [str(e.values.get("worker")) for e in events if e.kind is EventKind.GRANTED]


class Node:
    """One `node` client process, read line by line (each line one JSON object)."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            ["node", *args], cwd=CLIENTS, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def line(self, timeout_s: float = 90) -> dict[str, Any]:
        stdout: IO[str] = self.process.stdout  # type: ignore[assignment]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = stdout.readline()
            if text:
                return dict(json.loads(text))
            if self.process.poll() is not None:
                pytest.fail(f"node {self.process.args!r} exited {self.process.returncode}: {self.process.stderr.read()}")  # type: ignore[union-attr]
        pytest.fail(f"node {self.process.args!r} printed nothing in {timeout_s} s")

    def go_on(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("close\n")
        self.process.stdin.flush()

    def finish(self) -> None:
        assert self.process.wait(timeout=60) == 0, self.process.stderr.read()  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def wait_until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"
        time.sleep(0.1)


@pytest.mark.parametrize("supervised_pool", [2], indirect=True)
def test_typescript_sdk_clients_never_share_a_container_and_a_third_waits_for_the_first_freed(supervised_pool: Supervised) -> None:
    url, key = connect_url(supervised_pool), new_key(supervised_pool, "ts-agents")
    pool = ContainerPool(supervised_pool.config)
    first, second = Node("mcp-client.mjs", url, key, "hold"), Node("mcp-client.mjs", url, key, "hold")
    third: Node | None = None
    try:
        a, b = first.line(), second.line()
        for seen in (a, b):
            assert {"browser_navigate", "browser_snapshot", "browser_click"} <= set(seen["tools"]), seen["tools"]
            assert "Hello from the TypeScript SDK" in seen["snapshot"], seen["snapshot"]
        assert {a["container"], b["container"]} == {"container-001", "container-002"}, "two clients, two containers"

        third = Node("mcp-client.mjs", url, key)
        wait_until(lambda: pool.status()["waiting"] == 1, 30, "the third client queueing for a container")
        assert pool.status()["allocated"] == 2
        first.go_on()
        c = third.line()
        assert c["container"] == a["container"], "the third got the container the first freed"
        for client in (first, third):
            assert client.line()["event"] == "closed"
            client.finish()
        second.go_on()
        second.line()
        second.finish()
        wait_until(lambda: pool.status()["allocated"] == 0, 15, "every lease released by the clients' DELETE")
    finally:
        for node in (first, second, third):
            if node is not None:
                node.stop()
    assert holders(supervised_pool) == ["key:ts-agents"] * 3


async def python_client(url: str, key: str) -> dict[str, Any]:
    """The official Python client as its docs show it: default mode ("auto": it tries the 2026
    discovery first, then initialize), the key on its HTTP client."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60)
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        tools = await client.list_tools()
        await client.call_tool("browser_navigate", {"url": "data:text/html,<title>Py</title><h1>Hello from the Python SDK</h1>"})
        snapshot = await client.call_tool("browser_snapshot", {})
        return {
            "tools": [tool.name for tool in tools.tools],
            "snapshot": "\n".join(getattr(part, "text", "") for part in snapshot.content),
            "version": client.protocol_version,
        }


@pytest.mark.parametrize("supervised_pool", [1], indirect=True)
def test_the_official_python_client_with_its_defaults_falls_back_to_initialize_and_takes_one_lease(supervised_pool: Supervised) -> None:
    url, key = connect_url(supervised_pool), new_key(supervised_pool, "py-agent")
    seen = asyncio.run(python_client(url, key))
    assert "browser_navigate" in seen["tools"]
    assert "Hello from the Python SDK" in seen["snapshot"], seen["snapshot"]
    assert seen["version"] and seen["version"] < "2026", "the handshake era: the discovery probe fell back to initialize"
    pool = ContainerPool(supervised_pool.config)
    wait_until(lambda: pool.status()["allocated"] == 0, 15, "the lease released when the client closed")
    assert holders(supervised_pool) == ["key:py-agent"], "the discovery probe took no lease; only the initialize did"


@pytest.mark.parametrize("supervised_pool", [2], indirect=True)
def test_a_bullmq_worker_signs_in_through_the_pool_from_its_own_queue_on_the_same_redis(supervised_pool: Supervised) -> None:
    url, key = connect_url(supervised_pool), new_key(supervised_pool, "bullmq")
    emails = [f"user{i}@example.test" for i in range(3)]
    worker = Node("bullmq-sign-in.mjs", supervised_pool.config.redis.url, f"cinnamon-e2e-{uuid.uuid4().hex[:8]}", url, key, *emails)
    try:
        done = [worker.line(180) for _ in emails]
        worker.finish()
    finally:
        worker.stop()
    assert all(d["event"] == "completed" for d in done), done
    assert sorted(d["email"] for d in done) == emails
    assert {d["container"] for d in done} <= {"container-001", "container-002"}
    pool = ContainerPool(supervised_pool.config)
    wait_until(lambda: pool.status()["allocated"] == 0, 15, "every job's session closed and its lease released")
    assert holders(supervised_pool) == ["key:bullmq"] * 3, "one lease per job"
