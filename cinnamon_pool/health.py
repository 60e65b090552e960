"""Health probes over HTTP. A TCP connect proves nothing (docker-proxy always accepts), so:

- liveness: ``GET /mcp`` must get an HTTP answer (playwright-mcp says 400, ~14 ms);
- readiness: MCP ``initialize`` must return a session id, which is then ended with ``DELETE``
  (20-40 ms), so the probe leaves no browser behind.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from cinnamon_pool import mcpwire
from cinnamon_pool.clock import SYSTEM_CLOCK, Clock

_INITIALIZE = mcpwire.initialize("cinnamon-pool-probe")


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    seconds: float
    detail: str = ""
    timed_out: bool = False  # no answer within the timeout (the seed's "no answer for 5 s")


def probe_client(auth: httpx.Auth | None = None) -> httpx.Client:
    """One HTTP client for many probes. Making one costs ~30 ms of CPU (its TLS context), more
    than the probe itself: a supervisor of 100 containers that made one per probe spent 3 s a
    health round on it. It keeps no connection, so each probe still opens its own."""
    return httpx.Client(auth=auth, limits=httpx.Limits(max_keepalive_connections=0))


def liveness(
    endpoint: str, timeout_s: float = 5.0, clock: Clock = SYSTEM_CLOCK, auth: httpx.Auth | None = None, client: httpx.Client | None = None
) -> ProbeResult:
    started = clock.monotonic()
    try:
        if client is not None:
            response = client.get(endpoint, timeout=timeout_s, auth=httpx.USE_CLIENT_DEFAULT if auth is None else auth)
        else:
            response = httpx.get(endpoint, timeout=timeout_s, auth=auth)
    except httpx.TimeoutException:
        return ProbeResult(False, clock.monotonic() - started, f"no answer within {timeout_s:g}s", timed_out=True)
    except httpx.HTTPError as error:
        return ProbeResult(False, clock.monotonic() - started, f"{type(error).__name__}: {error}")
    elapsed = clock.monotonic() - started
    return ProbeResult(response.status_code < 500, elapsed, f"HTTP {response.status_code}")


def readiness(
    endpoint: str, timeout_s: float = 5.0, client: httpx.Client | None = None, clock: Clock = SYSTEM_CLOCK, auth: httpx.Auth | None = None
) -> ProbeResult:
    """Open an MCP session and end it; ok when both steps answered within ``timeout_s``
    (``auth``: the host's door, see door.py)."""
    started = clock.monotonic()
    owned = client is None
    http = client or httpx.Client(timeout=timeout_s, auth=auth)
    try:
        response = http.post(endpoint, json=_INITIALIZE, headers=mcpwire.ACCEPT, timeout=timeout_s)
        session = response.headers.get("mcp-session-id")
        if response.status_code != 200 or not session:
            return ProbeResult(False, clock.monotonic() - started, f"initialize answered HTTP {response.status_code}")
        http.delete(endpoint, headers={"mcp-session-id": session}, timeout=timeout_s)
    except httpx.HTTPError as error:
        return ProbeResult(False, clock.monotonic() - started, f"{type(error).__name__}: {error}")
    finally:
        if owned:
            http.close()
    return ProbeResult(True, clock.monotonic() - started, "initialize + DELETE")
