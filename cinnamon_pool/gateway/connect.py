"""Leases on connect: any MCP client with an API key gets a browser of its own from one URL,
``POST {advertise_url}/{pool}/mcp``.

The client's ``initialize`` (no ``mcp-session-id``) takes a lease from the same FIFO queue as
rq jobs and is forwarded, with that lease's token, to the gateway of the container's host (this
one or another: the URL in the grant), which hands over the container's prepared session as it
does for jobs. Every later request of the session goes the same way. While the session is in use
(a request in flight, or one within ``gateway.session_idle_s``) this gateway renews the lease;
it releases it on DELETE, after the idle time, or when the key is revoked, and the hard cap and
``kill`` end it as for any lease. The binding of each session lives in Redis
(``connect_sessions``), so a restarted gateway serves the sessions that are still leased.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from cinnamon_pool import decode, tokens
from cinnamon_pool.clock import SYSTEM_CLOCK, Clock
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.endpoints import check_endpoint
from cinnamon_pool.errors import InvalidIdentifier, LeaseError, PoolExhausted, PoolNotReady, StoreError, UntrustedEndpoint
from cinnamon_pool.gateway.auth import Refusal
from cinnamon_pool.gateway.proxy import forwarded_headers, initialize_request, open_upstream, read_body, relay, request_headers
from cinnamon_pool.lease.gatewayside import GatewayStore
from cinnamon_pool.model import ARTIFACTS, CLIENT_PREFIX, ApiKey, ConnectSession, Holder, Outcome, keeps_artifacts, validate_test_run_id

T = TypeVar("T")
METHOD_NOT_FOUND = -32601  # JSON-RPC's code
CHECK_EVERY_S = 0.5  # idle sessions and revoked keys are looked for this often (revoked: cut within 1 s)


@dataclass
class _Held:
    """What this gateway knows of one on-connect session."""

    binding: ConnectSession
    bearer: str  # the lease token (the binding and Redis keep only its fingerprint)
    endpoint: str  # the container's gateway URL (the grant's)
    last_used: float
    renewed: float
    in_flight: int = 0
    infra_error: bool = False
    artifacts: str = ""  # X-Cinnamon-Artifacts of its initialize: when its trace is kept
    trace: str = ""  # where the gateway keeps the lease's trace (its hand-over said so)


@dataclass
class OnConnect:
    config: PoolConfig
    store: GatewayStore
    http: httpx.AsyncClient
    secret_key: bytes  # makes each session's token secret from its nonce (this host's door key)
    clock: Clock = SYSTEM_CLOCK
    held: dict[str, _Held] = field(default_factory=dict)  # session id -> its lease
    waiting: int = 0

    def __post_init__(self) -> None:
        self.leases = self.store.lease_client(self.config.rules, self.clock)

    # -- requests --------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        key = await self._key(request)
        session = request.headers.get("mcp-session-id")
        body = b""
        if request.method == "POST":
            gateway = self.config.gateway
            body = await read_body(request.stream(), request.headers.get("content-length"), gateway.max_body_bytes, gateway.body_timeout_s)
        if session is None:
            if request.method != "POST":
                raise Refusal(400, "no_session", "open a session first: POST an MCP initialize")
            if initialize_request(body) is None:
                return _not_a_session_opener(body)
            return await self._open(request, key, body)
        held = await self._held(session)
        if held is None:
            raise Refusal(404, "unknown_session", "no such session (ended, or its lease ended)")
        if held.binding.key != key.name:
            raise Refusal(403, "not_your_session", "this session was opened with another key", held.binding.container)
        return await self._forward(request, held, body)

    async def _key(self, request: Request) -> ApiKey:
        header = request.headers.get("authorization") or ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Refusal(401, "no_key", "send Authorization: Bearer <API key> (cinnamon-pool keys create NAME)")
        found = await self.store.api_key_of(value.strip())
        if found is None:
            raise Refusal(403, "bad_key", "unknown or revoked API key")
        return found

    async def _open(self, request: Request, key: ApiKey, body: bytes) -> Response:
        if await self._open_count(key.name) >= key.max_sessions:
            raise Refusal(429, "key_at_max_sessions", f"key {key.name!r} has {key.max_sessions} sessions open (its max)")
        if self.waiting >= self.config.gateway.max_waiting_sessions:
            raise Refusal(503, "too_many_waiting", f"{self.waiting} sessions wait for a container on this gateway")
        test_run_id = request.headers.get("x-test-run-id") or f"{key.name}-{secrets.token_hex(3)}"
        try:
            validate_test_run_id(test_run_id)
        except InvalidIdentifier as error:
            raise Refusal(400, "bad_test_run_id", str(error)) from None
        artifacts = request.headers.get("x-cinnamon-artifacts", "failure").strip().lower()
        if artifacts not in ARTIFACTS:
            raise Refusal(400, "bad_artifacts", f"X-Cinnamon-Artifacts {artifacts[:40]!r}: use one of {', '.join(ARTIFACTS)}")
        self.waiting += 1
        nonce = secrets.token_hex(16)
        try:
            grant = await _unless_gone(
                request,
                self.leases.acquire(
                    Holder(test_run_id, "", CLIENT_PREFIX + key.name, artifacts),
                    self.config.gateway.session_acquire_timeout_s,
                    secret=tokens.derived_secret(self.secret_key, nonce),
                ),
            )
        except PoolExhausted as error:
            raise Refusal(503, "pool_exhausted", str(error), extra={"pool": error.pool, "counts": error.counts}) from None
        except PoolNotReady as error:
            raise Refusal(503, "pool_not_ready", str(error)) from None
        finally:
            self.waiting -= 1
        try:
            check_endpoint(self.config, grant.endpoint)
        except UntrustedEndpoint as error:  # a forged record: the token is not sent there
            with contextlib.suppress(LeaseError, StoreError):
                await self.leases.release(grant.name, grant.token, Outcome.INFRA_ERROR)
            raise Refusal(502, "untrusted_endpoint", str(error), grant.name) from None
        now, opened_ms = self.clock.monotonic(), grant.granted_ms
        binding = ConnectSession("-", key.name, grant.name, tokens.fingerprint(grant.token), test_run_id, opened_ms, nonce)
        held = _Held(binding, grant.token, grant.endpoint, now, now, artifacts=artifacts)
        try:
            upstream = await self._send(held, request, body)
        except BaseException:
            await self._end(held, Outcome.INFRA_ERROR)
            raise
        session = upstream.headers.get("mcp-session-id")
        if upstream.status_code >= 400 or not session:
            await upstream.aclose()
            await self._end(held, Outcome.INFRA_ERROR if upstream.status_code >= 500 else Outcome.OK)
            raise Refusal(502, "initialize_failed", f"the container answered the initialize with HTTP {upstream.status_code}", grant.name)
        held.binding = dataclasses.replace(binding, session=session)
        held.trace = upstream.headers.get("x-cinnamon-trace", "")
        self.held[session] = held
        try:
            await self.store.bind(session, json.dumps({**held.binding.to_json(), "endpoint": held.endpoint}))
        except BaseException:  # Redis went away after the container answered: nothing is left open
            await upstream.aclose()
            await self._end(held, Outcome.INFRA_ERROR)
            raise
        with contextlib.suppress(StoreError):
            await self.store.key_used(key.name, int(self.clock.now().timestamp() * 1000))
        return self._stream(held, upstream)

    async def _forward(self, request: Request, held: _Held, body: bytes) -> Response:
        upstream = await self._send(held, request, body)
        if request.method == "DELETE":
            await upstream.aclose()
            outcome = Outcome.TEST_FAILED if request.headers.get("x-cinnamon-outcome") == "test_failed" else None
            await self._end(held, outcome)
            return Response(status_code=upstream.status_code, headers={"X-Cinnamon-Container": held.binding.container})
        return self._stream(held, upstream)

    async def _send(self, held: _Held, request: Request, body: bytes) -> httpx.Response:
        headers = {**request_headers(request.headers), "Authorization": f"Bearer {held.bearer}"}
        held.in_flight += 1
        held.last_used = self.clock.monotonic()
        try:
            upstream = await open_upstream(
                self.http, request.method, held.endpoint, headers, body, held.binding.container, self.config.gateway.upstream_timeout_s
            )
        except Refusal:
            held.in_flight -= 1
            held.infra_error = True
            raise
        if upstream.status_code >= 500:
            held.infra_error = True
        return upstream

    def _stream(self, held: _Held, upstream: httpx.Response) -> Response:
        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in relay(upstream):
                    yield chunk
            finally:
                held.in_flight -= 1
                held.last_used = self.clock.monotonic()

        headers = {**forwarded_headers(upstream.headers), "X-Cinnamon-Container": held.binding.container}
        return StreamingResponse(body(), status_code=upstream.status_code, headers=headers)

    # -- sessions and their leases -----------------------------------------------------------
    async def _held(self, session: str) -> _Held | None:
        held = self.held.get(session)
        if held is not None:
            return held
        if len(session) > 128:
            return None
        raw = await self.store.binding(session)
        if raw is None:
            return None
        try:
            binding = decode.connect_session(session, raw)
            endpoint = decode.json_object(raw, "connect session").get("endpoint")
            bearer = tokens.claim(binding.token, tokens.derived_secret(self.secret_key, binding.nonce))
        except (decode.BadValue, InvalidIdentifier):  # not written by a gateway with this host's key
            return None
        if not isinstance(endpoint, str):
            return None
        try:
            check_endpoint(self.config, endpoint)
        except UntrustedEndpoint:
            return None
        now = self.clock.monotonic()
        held = self.held[session] = _Held(
            binding, bearer, endpoint, now, now - self.config.rules.lease_ttl_s
        )  # a restarted gateway adopts it
        return held

    async def _open_count(self, key_name: str) -> int:
        """The key's sessions whose lease still holds. A binding whose lease has ended is forgotten
        here: a gateway that died (or lost Redis) with sessions open could not, and their holders
        may never come back to end them (they would count against the key's max for ever)."""
        return sum(binding.key == key_name for binding in await self.store.live_bindings())

    async def _end(self, held: _Held, outcome: Outcome | None) -> None:
        """Release the session's lease (once) with its outcome, and forget the session."""
        if outcome is None:
            outcome = Outcome.INFRA_ERROR if held.infra_error else Outcome.OK
        self.held.pop(held.binding.session, None)
        with contextlib.suppress(LeaseError, StoreError):
            trace = held.trace if keeps_artifacts(held.artifacts, outcome) else ""
            await self.leases.release(held.binding.container, held.bearer, outcome, trace=trace)
        with contextlib.suppress(StoreError):
            await self.store.unbind(held.binding.session)

    async def keep(self) -> None:
        """Renew the leases of sessions in use; end idle ones and those of revoked keys."""
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            with contextlib.suppress(StoreError):
                await self._round()

    async def _round(self) -> None:
        if not self.held:
            return
        names = sorted({held.binding.key for held in self.held.values()})
        revoked = await self.store.revoked(names)
        now = self.clock.monotonic()
        for held in list(self.held.values()):
            idle = held.in_flight == 0 and now - held.last_used > self.config.gateway.session_idle_s
            if held.binding.key in revoked or idle:
                await self._end(held, None)
            elif now - held.renewed >= self.config.rules.lease_ttl_s / 3:
                try:
                    await self.leases.renew(held.binding.container, held.bearer)
                    held.renewed = now
                except LeaseError:  # ended elsewhere: killed, past the cap, container gone
                    self.held.pop(held.binding.session, None)
                    await self.store.unbind(held.binding.session)


def _not_a_session_opener(body: bytes) -> Response:
    """A session-less request that is not an ``initialize`` (the 2026 clients' ``server/discover``
    probe, say) takes no lease: it gets JSON-RPC's "method not found" at HTTP 400, which the
    MCP SDKs read as a server of the initialize era, and they go on with ``initialize``."""
    try:
        message = json.loads(body)
    except ValueError:
        message = None
    request_id = message.get("id") if isinstance(message, dict) else None
    error = {"code": METHOD_NOT_FOUND, "message": "a session on connect opens with an MCP initialize request"}
    return JSONResponse({"jsonrpc": "2.0", "id": request_id, "error": error}, 400)


async def _unless_gone(request: Request, acquiring: Awaitable[T]) -> T:
    """``acquiring``'s result; a client that goes away while it waits leaves the queue at once
    (the acquire is cancelled) instead of being granted a container nobody will use."""
    task, gone = asyncio.ensure_future(acquiring), asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in (task, gone):
            if not waiting.done():
                waiting.cancel()
        await asyncio.gather(task, gone, return_exceptions=True)
    if task.cancelled():
        raise Refusal(499, "client_gone", "the client went away while it waited for a container")
    return task.result()


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (its body was read whole before this)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
