"""Section "gateway": what the gateway adds to each MCP request, against the same request sent to
the container directly in the same run (real playwright-mcp at the configured cpus), how many
small requests per second it forwards, its memory while 100 streams stay open for 60 s, and its
overhead per request while they are open (against the overhead with none open, same run)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from cinnamon_pool.lease.handle import ContainerLease
from cinnamon_pool.lease.heartbeat import Heartbeat
from cinnamon_pool.model import Grant, Holder
from tests.bench.report import Row, percentile
from tests.bench.supervisor_bench import PLAYWRIGHT, supervised
from tests.support import free_port, wait_for_http

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE: dict[str, Any] = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
}  # fmt: skip


@contextlib.contextmanager
def gateway_process(
    redis_url: str, pool: str, ports: str, listen: str, workdir: Path, *, prepare: bool = True, extra: str = ""
) -> Iterator[subprocess.Popen[bytes]]:
    """A `cinnamon-pool gateway` process; ``extra``: more lines of its [gateway] table."""
    path = workdir / f"gateway-{pool}.toml"
    path.write_text(
        f'[redis]\nurl = "{redis_url}"\n[pool]\nname = "{pool}"\nmin_size = 1\nmax_size = 2\ninitial_size = 1\n'
        f'[container]\nhost_port_range = "{ports}"\n[gateway]\nlisten = "{listen}"\nprepare = {str(prepare).lower()}\n{extra}'
        f'[logs]\ndir = "{workdir / "logs"}"\n'
    )
    env = {**os.environ, "CINNAMON_CONFIG": str(path)}
    stderr = (workdir / f"gateway-{pool}.err").open("ab")
    process = subprocess.Popen([str(Path(sys.executable).parent / "cinnamon-pool"), "gateway"], env=env, stderr=stderr)
    try:
        wait_for_http(f"http://{listen}/metrics", 15, "the gateway")
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Session:
    """One MCP session over one keep-alive connection, on a given URL (direct or gateway)."""

    def __init__(self, url: str, token: str, opening: dict[str, object] = INITIALIZE) -> None:
        self.url, self.client = url, httpx.Client(timeout=60, headers={**HEADERS, "Authorization": f"Bearer {token}"})
        answer = self.client.post(url, content=json.dumps(opening))
        answer.raise_for_status()
        self.client.headers["mcp-session-id"] = answer.headers["mcp-session-id"]
        self.client.post(url, content=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        self.calls = 1

    def call(self, method: str, params: dict[str, object] | None = None) -> float:
        self.calls += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self.calls, "method": method, **({"params": params} if params else {})})
        started = time.perf_counter()
        response = self.client.post(self.url, content=body)
        response.read()
        response.raise_for_status()
        return time.perf_counter() - started

    def tool(self, name: str, arguments: dict[str, object]) -> float:
        return self.call("tools/call", {"name": name, "arguments": arguments})

    def close(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            self.client.delete(self.url)
        self.client.close()


def paired(direct: Session, through: Session, measure: str, samples: int, **arguments: object) -> tuple[list[float], list[float]]:
    """Alternate direct and gateway calls, so drift on the machine hits both alike, and which goes
    first in each pair, so neither always runs on the warmer path."""
    plain: list[float] = []
    gated: list[float] = []
    for i in range(samples):
        pair = [(direct, plain), (through, gated)]
        for session, out in pair if i % 2 == 0 else pair[::-1]:
            out.append(session.call("ping") if measure == "ping" else session.tool(measure, arguments))
    return plain, gated


async def flood(url: str, token: str, session: str, seconds: float, concurrency: int) -> int:
    """Small requests (MCP ping) as fast as ``concurrency`` clients can send them; how many answered."""
    headers = {**HEADERS, "Authorization": f"Bearer {token}", "mcp-session-id": session}
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    done = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, headers=headers, limits=limits) as client:

        async def one() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                (await client.post(url, content=body)).raise_for_status()
                done += 1

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return done


STREAMS = 100  # held open at once, as a 100-container pool's holders would (the scale section's largest)
LEASES = 2  # they are spread over: a lease opens at most 64 MCP sessions (gateway/sessions.py)


async def hold_streams(url: str, token: str, count: int, seconds: float, opened_all: threading.Event | None = None) -> int:
    """``count`` MCP sessions, each with its GET event stream held open for ``seconds``
    (``opened_all`` is set once every stream is open)."""
    headers = {**HEADERS, "Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(30, read=None), headers=headers, limits=httpx.Limits(max_connections=2 * count)
    ) as client:
        sessions: list[str] = []
        for _ in range(count):
            answer = await client.post(url, content=json.dumps(INITIALIZE))
            if "mcp-session-id" not in answer.headers:
                raise RuntimeError(f"session {len(sessions) + 1} of {count}: HTTP {answer.status_code} {answer.text[:300]}")
            sessions.append(answer.headers["mcp-session-id"])
        async with contextlib.AsyncExitStack() as stack:
            opened = 0
            for session in sessions:
                stream = await stack.enter_async_context(
                    client.stream("GET", url, headers={"Accept": "text/event-stream", "mcp-session-id": session})
                )
                opened += stream.status_code == 200
            if opened_all is not None:
                opened_all.set()
            await asyncio.sleep(seconds)
        for session in sessions:
            await client.delete(url, headers={"mcp-session-id": session})
    return opened


def hold_on(grant: Grant, count: int, seconds: float, opened_all: threading.Event) -> int:
    """:func:`hold_streams` on ``grant``'s lease, in a thread of its own."""
    return asyncio.run(hold_streams(grant.endpoint, grant.token, count, seconds, opened_all))


def run(redis_url: str, workdir: Path, hold_s: float = 60.0) -> list[Row]:
    ports, listen = "3930-3931", f"127.0.0.1:{free_port()}"
    with supervised(redis_url, PLAYWRIGHT, LEASES, workdir, ports, gateway=listen, canary_share=0.0) as (supervisor, store, _engine):
        config = supervisor.config
        more = f"max_streams_per_lease = {STREAMS // LEASES + 8}\n"  # a lease's streams and the paired requests beside them
        with gateway_process(redis_url, config.pool.name, ports, listen, workdir, extra=more) as gateway:
            grant: Grant = store.acquire(Holder("bench-gateway"), timeout_s=30)
            heartbeat = Heartbeat(store, ContainerLease.from_grant(config.pool.name, grant, fence_after_s=20)).start()
            direct_url = f"http://127.0.0.1:{config.container.host_ports[0]}/mcp"
            direct, through = Session(direct_url, grant.token), Session(grant.endpoint, grant.token)
            for session in (direct, through):  # the browser up and a page to snapshot, in both sessions
                session.tool("browser_navigate", {"url": "data:text/html,<h1>bench</h1><p>" + "text " * 200 + "</p>"})
            paired(direct, through, "ping", 50)  # warm-up
            plain_ping, gated_ping = paired(direct, through, "ping", 1000)
            plain_snap, gated_snap = paired(direct, through, "browser_snapshot", 40)
            print(
                f"  ping p50 direct {percentile(plain_ping, 50) * 1000:.2f} ms, gateway {percentile(gated_ping, 50) * 1000:.2f} ms",
                flush=True,
            )
            session_id = str(through.client.headers["mcp-session-id"])
            direct_rps = asyncio.run(flood(direct_url, grant.token, str(direct.client.headers["mcp-session-id"]), 5.0, 32)) / 5.0
            gateway_rps = asyncio.run(flood(grant.endpoint, grant.token, session_id, 5.0, 32)) / 5.0
            print(f"  small requests/s: direct {direct_rps:.0f}, gateway {gateway_rps:.0f}", flush=True)
            rss_before = rss_mb(gateway.pid)
            other: Grant = store.acquire(Holder("bench-gateway-streams"), timeout_s=60)
            renewing = Heartbeat(store, ContainerLease.from_grant(config.pool.name, other, fence_after_s=20)).start()
            share = STREAMS // LEASES
            events = [threading.Event() for _ in range(LEASES)]
            with concurrent.futures.ThreadPoolExecutor(LEASES) as held:
                holding = [held.submit(hold_on, g, share, hold_s, e) for g, e in zip((grant, other), events, strict=True)]
                for event, future in zip(events, holding, strict=True):
                    if not event.wait(60):
                        raise RuntimeError(f"streams did not open within 60 s: {future.exception(0) if future.done() else 'still opening'}")
                busy_ping, busy_gated = paired(direct, through, "ping", 500)
                opened = sum(future.result() for future in holding)
            renewing.stop()
            store.release(other.name, other.token)
            rss_after = rss_mb(gateway.pid)
            print(f"  {opened} streams held {hold_s:.0f} s: gateway RSS {rss_before:.1f} -> {rss_after:.1f} MB", flush=True)
            direct.close()
            through.close()
            heartbeat.stop()
            store.release(grant.name, grant.token)
    overhead = [g - p for p, g in zip(plain_ping, gated_ping, strict=True)]
    busy_overhead = [g - p for p, g in zip(busy_ping, busy_gated, strict=True)]
    snap_p50 = percentile(plain_snap, 50)
    return [
        Row("gateway", "MCP ping through the gateway, p50 (vs direct)", percentile(gated_ping, 50) * 1000, percentile(plain_ping, 50) * 1000, "ms", "ratio <= 1.5"),
        Row("gateway", "MCP ping through the gateway, p99 (vs direct)", percentile(gated_ping, 99) * 1000, percentile(plain_ping, 99) * 1000, "ms", "ratio <= 2"),
        Row("gateway", "gateway overhead per request, p50 (paired)", percentile(overhead, 50) * 1000, None, "ms", "value <= 1"),
        Row("gateway", "browser_snapshot through the gateway, p50 (vs direct)", percentile(gated_snap, 50) * 1000, snap_p50 * 1000, "ms", "ratio <= 1.02"),
        Row("gateway", "browser_snapshot through the gateway, p99 (vs direct)", percentile(gated_snap, 99) * 1000, percentile(plain_snap, 99) * 1000, "ms", "ratio <= 1.1"),
        Row("gateway", "small requests per second, 32 clients (vs direct)", gateway_rps, direct_rps, "req/s", "ratio >= 0.9"),
        Row("gateway", f"gateway overhead per request with {opened} streams open, p50 (vs none open)", percentile(busy_overhead, 50) * 1000, percentile(overhead, 50) * 1000, "ms", "ratio <= 1.5"),
        Row("gateway", f"gateway RSS after {opened} streams held {hold_s:.0f} s (vs before)", rss_after, rss_before, "MB", "ratio <= 1.05 and value <= 150"),
    ]  # fmt: skip
