"""Section "connect": leases on connect (an API key, one URL) against the library path
(``ContainerPool.lease`` and the same client on the lease's endpoint), real playwright-mcp at 0.5
CPU, 2 containers with prepared sessions:

- the connect path: from the ``initialize`` to the first navigate's answer, a prepared container free;
- session throughput: open, navigate, close, 4 clients on 2 containers;
- a served session's request p50 while 200 clients wait on the same gateway, against none waiting.

The client is the same plain JSON-RPC-over-HTTP client on both paths, so the rows measure the
paths, not two client libraries.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from cinnamon_pool.lease.apikeys import ApiKeys
from cinnamon_pool.mcpwire import PROTOCOL_VERSION
from cinnamon_pool.pool import ContainerPool
from tests.bench.gateway_bench import HEADERS, INITIALIZE, Session, gateway_process
from tests.bench.report import Row, percentile
from tests.bench.signin_bench import wait_until_free
from tests.bench.supervisor_bench import PLAYWRIGHT, supervised
from tests.support import free_port

PORTS = "3940-3941"
SAMPLES = 15  # per path, connect path
THROUGHPUT_S = 40.0  # per path
WAITERS = 200
PINGS = 300
PAGE = "data:text/html,<title>bench</title><h1>connect</h1>"
# The protocol version the prepared sessions speak, as today's SDKs send: a client on an older
# version is not handed a session prepared for a newer one (it opens its own, the cold path).
OPENING = {**INITIALIZE, "params": {**INITIALIZE["params"], "protocolVersion": PROTOCOL_VERSION}}


class Client(Session):
    """One MCP session, plain JSON-RPC over HTTP, opened as today's SDKs open it."""

    def __init__(self, url: str, bearer: str) -> None:
        super().__init__(url, bearer, OPENING)

    def navigate(self) -> None:
        self.call("tools/call", {"name": "browser_navigate", "arguments": {"url": PAGE}})

    def close(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            self.client.delete(self.url)
        self.client.close()


@contextlib.contextmanager
def library_session(pool: ContainerPool, run: str) -> Iterator[Client]:
    with pool.lease(run) as lease:
        client = Client(lease.endpoint, lease.token)
        try:
            yield client
        finally:
            client.close()


@contextlib.contextmanager
def connect_session(url: str, key: str) -> Iterator[Client]:
    client = Client(url, key)
    try:
        yield client
    finally:
        client.close()


def first_navigates(pool: ContainerPool, url: str, key: str) -> tuple[list[float], list[float]]:
    """Alternating: each sample starts with every container free and prepared."""
    library: list[float] = []
    connect: list[float] = []
    for i in range(SAMPLES):
        paths: list[tuple[list[float], contextlib.AbstractContextManager[Client]]] = [
            (library, library_session(pool, f"bench-lib-{i}")),
            (connect, connect_session(url, key)),
        ]
        for out, opened in paths:  # each context manager is entered only in its turn
            wait_until_free(pool, 2)
            started = time.perf_counter()
            with opened as client:
                client.navigate()
                out.append(time.perf_counter() - started)
    return library, connect


def throughput(open_session: Callable[[int], contextlib.AbstractContextManager[Client]], clients: int, seconds: float) -> float:
    """Sessions per second: ``clients`` threads each opening, navigating and closing in a loop."""
    done, failed = [0], []
    deadline = time.perf_counter() + seconds

    def loop(n: int) -> None:
        while time.perf_counter() < deadline:
            try:
                with open_session(n) as client:
                    client.navigate()
                done[0] += 1
            except Exception as error:  # counted, shown, and the row says it
                failed.append(f"{type(error).__name__}: {error}")
                return

    started = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failed:
        raise RuntimeError(f"{len(failed)} sessions failed, the first: {failed[0]}")
    return done[0] / (time.perf_counter() - started)


def pings(client: Client, count: int) -> list[float]:
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        client.call("ping")
        seconds.append(time.perf_counter() - started)
    return seconds


class Waiters:
    """``count`` clients waiting on the connect URL for a container, on one asyncio thread."""

    def __init__(self, url: str, key: str, count: int) -> None:
        self.url, self.key, self.count = url, key, count
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.tasks: list[concurrent.futures.Future[httpx.Response]] = []

    def __enter__(self) -> Waiters:
        self.thread.start()
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(30, read=None),
            headers={**HEADERS, "Authorization": f"Bearer {self.key}"},
            limits=httpx.Limits(max_connections=self.count + 10),
        )
        body = json.dumps(OPENING)
        for _ in range(self.count):
            self.tasks.append(asyncio.run_coroutine_threadsafe(self.client.post(self.url, content=body), self.loop))
        return self

    def __exit__(self, *_: object) -> None:
        for task in self.tasks:
            task.cancel()  # the clients hang up: the gateway drops them from the queue
        asyncio.run_coroutine_threadsafe(self.client.aclose(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def waiting_reached(pool: ContainerPool, count: int, seconds: float) -> int:
    """How many clients wait in the queue once ``count`` do, or the most seen within ``seconds``."""
    deadline, most = time.monotonic() + seconds, 0
    while most < count and time.monotonic() < deadline:
        most = max(most, pool.status()["waiting"])
        time.sleep(0.1)
    return most


def eventually(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {seconds} s")
        time.sleep(0.1)


def run(redis_url: str, workdir: Path) -> list[Row]:
    listen = f"127.0.0.1:{free_port()}"
    gateway_lines = f"session_acquire_timeout_s = 300\nmax_waiting_sessions = {WAITERS + 50}\n"
    with supervised(redis_url, PLAYWRIGHT, 2, workdir, PORTS, gateway=listen, canary_share=0.0) as (supervisor, store, _engine):
        config = supervisor.config
        pool = ContainerPool(config)
        key = ApiKeys(store.redis, config.pool.name).create("bench", max_sessions=WAITERS + 10)
        url = f"{config.gateway.base_url}/{config.pool.name}/mcp"
        with gateway_process(redis_url, config.pool.name, PORTS, listen, workdir, extra=gateway_lines):
            wait_until_free(pool, 2, timeout_s=120)
            library, connect = first_navigates(pool, url, key)
            print(
                f"  first navigate p50: library {percentile(library, 50) * 1000:.0f} ms, connect {percentile(connect, 50) * 1000:.0f} ms",
                flush=True,
            )
            wait_until_free(pool, 2)
            library_rate = throughput(lambda n: library_session(pool, f"bench-flow-{n}"), 4, THROUGHPUT_S)
            wait_until_free(pool, 2)
            connect_rate = throughput(lambda _n: connect_session(url, key), 4, THROUGHPUT_S)
            print(f"  sessions/s, 4 clients on 2 containers: library {library_rate:.2f}, connect {connect_rate:.2f}", flush=True)
            wait_until_free(pool, 2)
            with library_session(pool, "bench-holds-one"), connect_session(url, key) as served:
                served.navigate()
                pings(served, 50)  # warm-up
                quiet = pings(served, PINGS)
                with Waiters(url, key, WAITERS):
                    reached = waiting_reached(pool, WAITERS, 60)
                    loaded = pings(served, PINGS)
                eventually(lambda: pool.status()["waiting"] == 0, 30, "the waiters gone from the queue")
                quiet += pings(served, PINGS)
            if reached < WAITERS:  # the row then carries no figure, and misses its target
                print(f"  only {reached} of {WAITERS} clients came to wait within 60 s: the loaded row is not measured", flush=True)
            print(
                f"  served ping p50: none waiting {percentile(quiet, 50) * 1000:.2f} ms, {WAITERS} waiting {percentile(loaded, 50) * 1000:.2f} ms",
                flush=True,
            )
    return [
        Row("connect", "session on connect: initialize to first navigate, p50 (vs ContainerPool.lease, same client)", percentile(connect, 50) * 1000, percentile(library, 50) * 1000, "ms", "ratio <= 1.2 and value <= 500"),
        Row("connect", "session on connect: initialize to first navigate, p95 (vs the library path)", percentile(connect, 95) * 1000, percentile(library, 95) * 1000, "ms", ""),
        Row("connect", "sessions per second, open-navigate-close, 4 clients on 2 containers (vs the library path)", connect_rate, library_rate, "1/s", "ratio >= 0.9"),
        Row("connect", f"a served session's ping p50 while {WAITERS} clients wait (vs none waiting)", percentile(loaded, 50) * 1000 if reached >= WAITERS else float("nan"), percentile(quiet, 50) * 1000, "ms", "ratio <= 1.1"),
    ]  # fmt: skip
