"""The gateway's ASGI application: route, authorize, forward; refuse in one place; close the
streams of leases that ended.

Every refusal is a :class:`~cinnamon_pool.gateway.auth.Refusal` turned into one JSON answer
``{"error": ..., "container": ...}`` with its status (401 no token, 403 not the current lease,
404 unknown pool or container, 408/413/431 a slow or oversized request, 502 the container does not
answer, 503 Redis does not answer), counted in ``cinnamon_pool_gateway_refusals_total`` and written to the pool log as
ACCESS_DENIED (502: ERROR_OCCURRED), once per container, reason and client per minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cinnamon_pool.clock import SYSTEM_CLOCK, Clock
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.door import DoorAuth
from cinnamon_pool.errors import StoreError
from cinnamon_pool.gateway.auth import Authorizer, Refusal, Target, bearer_token
from cinnamon_pool.gateway.codeguard import CodeGuard
from cinnamon_pool.gateway.connect import OnConnect
from cinnamon_pool.gateway.forward import Answer, Forwarder
from cinnamon_pool.gateway.inprocess import InProcess
from cinnamon_pool.gateway.metrics import GatewayMetrics
from cinnamon_pool.gateway.prepare import Preparer
from cinnamon_pool.gateway.proxy import (
    LEASE_HEADER,
    forwarded_headers,
    initialize_request,
    read_body,
    request_headers,
)
from cinnamon_pool.gateway.said import Said
from cinnamon_pool.gateway.sessions import LeaseSessions
from cinnamon_pool.gateway.streams import Streams
from cinnamon_pool.gateway.tasks import stop
from cinnamon_pool.gateway.toolcalls import ToolCalls, is_tool_call, reports_error
from cinnamon_pool.gateway.traces import Traces
from cinnamon_pool.gateway.upstream import Upstream
from cinnamon_pool.lease.gatewayside import GatewayStore
from cinnamon_pool.logs.actions import Details, LogAction
from cinnamon_pool.logs.events import action_record
from cinnamon_pool.logs.format import LogKind
from cinnamon_pool.logs.writer import DailyLogWriter
from cinnamon_pool.model import LeaseTrace

MAX_HEADER_BYTES = 16 * 1024  # larger header blocks get 431 (past ~80 KiB the HTTP parser answers 400 itself)
WATCH_EVERY_S = 0.25  # how often open streams are checked against their leases (closed within 1 s)
STOP_WITHIN_S = 2.0  # a stopping gateway waits this long for its own background tasks
PUBLISH_EVERY_S = 2.0  # the tool-call figures go to Redis this often
TRACE_HEADER = "X-Cinnamon-Trace"  # the answer to a handed-over initialize: where the lease's trace is kept
RETRY_AFTER_S = 5  # what 429 and 503 answers tell a client to wait
REAUTHORIZE_AFTER_S = 0.05  # a request body slower than this to arrive is authorized again before it is forwarded


class Gateway:
    def __init__(
        self,
        config: PoolConfig,
        store: GatewayStore,
        writer: DailyLogWriter,
        *,
        clock: Clock = SYSTEM_CLOCK,
        door: DoorAuth | None = None,
    ) -> None:
        """``door``: this host's (door.door_for): every request to a container carries its secret."""
        self.config, self.writer, self.clock, self.door = config, writer, clock, door
        self.pool = config.pool.name
        self.store = store
        self.authorizer = Authorizer(config, store)
        self.code_guard = CodeGuard(config, store)
        self.streams = Streams()
        self.meters = GatewayMetrics(self.pool, self.streams.count, lambda: self.on_connect.waiting if self.on_connect else 0)
        self.tool_calls = ToolCalls()
        self.on_connect: OnConnect | None = None
        self.said = Said(writer, clock)  # refusals and containers' errors, in the daily logs
        self._http: httpx.AsyncClient | None = None  # the few calls of its own to containers
        self._forward: Forwarder | None = None  # the holders' requests to their containers
        self.preparer: Preparer | None = None
        self.traces: Traces | None = None  # the pool records a trace per lease (gateway/traces.py)
        self._ending: dict[str, asyncio.Lock] = {}  # per container: one lease end at a time
        # The MCP sessions each lease opened or was handed: the only ones it may name; ended with it.
        self.sessions = LeaseSessions(store)

    # -- the application -----------------------------------------------------------------
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/{pool}/mcp", self.connect, methods=["GET", "POST", "DELETE"]),
                Route("/{pool}/{name}/mcp", self.forward, methods=["GET", "POST", "DELETE"]),
                Route("/metrics", self.metrics, methods=["GET"]),
                Route("/{path:path}", self.not_found, methods=["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"]),
            ],
            lifespan=self.lifespan,
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        gateway = self.config.gateway
        timeout = httpx.Timeout(connect=gateway.connect_timeout_s, read=None, write=gateway.body_timeout_s, pool=gateway.connect_timeout_s)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False, auth=self.door) as http:
            self._http = http
            self._forward = Forwarder(self.door, gateway.connect_timeout_s)
            # Sessions on connect whose container is on this host reach its route in this process.
            connect_http = httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False, mounts=self._own_url(app))
            # The door key makes each session's token secret again after a restart; a gateway
            # without a door (tests) keeps a key of its own, so its sessions end with it.
            secret_key = self.door.key if self.door is not None else secrets.token_bytes(32)
            self.on_connect = OnConnect(self.config, self.store, connect_http, secret_key, clock=self.clock)
            tasks = [
                asyncio.create_task(self.on_connect.keep(), name="cinnamon-gateway-on-connect"),
                asyncio.create_task(self._watch_leases(), name="cinnamon-gateway-leases"),
                asyncio.create_task(self._publish_tool_calls(), name="cinnamon-gateway-tool-calls"),
            ]
            if gateway.prepare:
                own = httpx.Timeout(gateway.prepare_timeout_s, connect=gateway.connect_timeout_s)
                sessions_http = httpx.AsyncClient(timeout=own, limits=limits, trust_env=False, auth=self.door)
                if self.config.container.records:
                    self.traces = Traces(
                        sessions_http,
                        self.authorizer.upstream,
                        Path(self.config.logs.dir),
                        self.config.logs.artifacts_max_mb * 1024 * 1024,
                        lambda name, details: self._note(name, LogAction.ERROR_OCCURRED, details),
                        self.config.container.artifacts_video,
                    )
                self.preparer = Preparer(
                    self.config,
                    self.store,
                    sessions_http,
                    self.end_sessions,
                    self._note,
                    clock=self.clock,
                    traces=self.traces,
                )
                tasks.append(asyncio.create_task(self.preparer.run(), name="cinnamon-gateway-prepare"))
            try:
                yield
            finally:
                await stop(tasks, STOP_WITHIN_S)
                await connect_http.aclose()
                await self._forward.close()
                if self.preparer is not None:
                    await self.preparer.close()
                    await self.preparer.http.aclose()

    def _own_url(self, app: Starlette) -> dict[str, httpx.AsyncBaseTransport]:
        """This gateway's advertised origin, served by ``app`` itself (none when the URL has a
        path: a proxy in front may rewrite it)."""
        url = httpx.URL(self.config.gateway.base_url)
        if url.path.strip("/"):
            return {}
        return {f"{url.scheme}://{url.netloc.decode('ascii')}": InProcess(app)}

    async def forward(self, request: Request) -> Response:
        name = request.path_params.get("name", "")
        try:
            if sum(len(key) + len(value) for key, value in request.scope["headers"]) > MAX_HEADER_BYTES:
                raise Refusal(431, "headers_too_large", f"request headers are at most {MAX_HEADER_BYTES} bytes")
            self.authorizer.route(request.path_params["pool"], name)
            bearer = bearer_token(request.headers.get("authorization"))
            target = await self.authorizer.authorize(name, bearer)
            gateway = self.config.gateway
            if self.streams.held(target.name, target.token) >= gateway.max_streams_per_lease:
                raise Refusal(
                    429, "too_many_streams", f"a lease may have {gateway.max_streams_per_lease} requests and streams in flight", name
                )
            body = b""
            if request.method == "POST":
                reading = self.clock.monotonic()
                body = await read_body(
                    request.stream(), request.headers.get("content-length"), gateway.max_body_bytes, gateway.body_timeout_s
                )
                if self.clock.monotonic() - reading > REAUTHORIZE_AFTER_S:  # the lease may have ended meanwhile
                    target = await self.authorizer.authorize(name, bearer)
            hide_unsafe = await self.code_guard.check(target, body) if body else False
            session = request.headers.get("mcp-session-id")
            if session is not None and not await self.sessions.owns(target.name, target.token, session):
                raise Refusal(403, "not_your_session", "this MCP session was not opened under this lease", target.name)
            initialize = initialize_request(body) if request.method == "POST" and session is None else None
            if initialize is not None and self.preparer is not None:
                handed = await self.preparer.take(target.name, target.container_id, target.restarts, initialize[1])
                self.meters.handovers.labels(self.pool, "prepared" if handed else "cold").inc()
                if handed is not None:
                    run, today, call = target.test_run_id or target.name, self.clock.now().date(), self._upstream(target.name).call_tool
                    trace = await self.traces.hand_over(handed, target.artifacts, run, today, call) if self.traces else None
                    await self._opened(target, handed.session, trace)
                    answer = {"jsonrpc": "2.0", "id": initialize[0], "result": dict(handed.result)}
                    headers = {"mcp-session-id": handed.session, **({TRACE_HEADER: trace.path} if trace else {})}
                    return JSONResponse(answer, headers=headers)
            timed = request.method == "POST" and is_tool_call(body)
            started = self.clock.monotonic()
            # The container hears which lease a request came under from the gateway, never from the client.
            headers = {**request_headers(request.headers), LEASE_HEADER: target.token}
            upstream = await self._send(target, request.method, headers, body)
            try:
                if upstream.status_code >= 400 and upstream.status_code != 404:  # (404: a session that ended, told to its client)
                    self.said.container_error(target.name, request.method, upstream.status_code, upstream.headers.get("content-type", "-"))
                if "mcp-session-id" in upstream.headers and initialize is not None:
                    await self._opened(target, upstream.headers["mcp-session-id"])
            except BaseException:
                await upstream.close()  # (Redis went away while the container answered: not left open)
                raise
        except StoreError:
            return self._refuse(Refusal(503, "store_unreachable", "the lease store does not answer: try again", name), request)
        except Refusal as refusal:
            return self._refuse(refusal, request)
        self.meters.forwarded.labels(self.pool, request.method).inc()
        if hide_unsafe:
            try:
                return await self.code_guard.tool_list(upstream)
            except Refusal as refusal:
                return self._refuse(refusal, request)
        self.streams.add(target.name, target.token, upstream, upstream.close)

        async def body_then_forget() -> AsyncIterator[bytes]:
            failed, ended = upstream.status_code >= 400, False
            try:
                async for chunk in upstream.chunks():
                    failed = failed or (timed and reports_error(chunk))
                    yield chunk
                ended = True
            finally:
                self.streams.discard(target.name, target.token, upstream)
                if timed:
                    self._tool_call(target.name, self.clock.monotonic() - started, failed or not ended)

        return StreamingResponse(body_then_forget(), status_code=upstream.status_code, headers=forwarded_headers(upstream.headers))

    async def connect(self, request: Request) -> Response:
        """Leases on connect (gateway/connect.py): ``/{pool}/mcp`` with an API key."""
        started = self.clock.monotonic()
        opening = request.method == "POST" and "mcp-session-id" not in request.headers
        try:
            if request.path_params["pool"] != self.pool:
                raise Refusal(404, "unknown_pool", f"this gateway serves pool {self.pool!r}")
            assert self.on_connect is not None, "the lifespan made it"
            response = await self.on_connect.handle(request)
        except StoreError:
            return self._refuse(Refusal(503, "store_unreachable", "the lease store does not answer: try again"), request)
        except Refusal as refusal:
            return self._refuse(refusal, request)
        if opening:
            self.meters.session_waits.labels(self.pool).observe(self.clock.monotonic() - started)
        return response

    async def _send(self, target: Target, method: str, headers: dict[str, str], body: bytes) -> Answer:
        """Forward and wait for the answer's head; cut short (403) if the lease ends meanwhile."""
        assert self._forward is not None, "the lifespan opened the client"
        started = self.clock.monotonic()
        sending = asyncio.ensure_future(
            self._forward.send(method, target.upstream, headers, body, target.name, self.config.gateway.upstream_timeout_s)
        )

        async def cancel() -> None:
            sending.cancel()

        self.streams.add(target.name, target.token, sending, cancel)
        try:
            upstream = await sending
        except asyncio.CancelledError:
            if asyncio.current_task() is not None and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise  # the client went away: not ours to answer
            raise Refusal(403, "lease_ended", "the lease ended while the container was answering", target.name) from None
        finally:
            self.streams.discard(target.name, target.token, sending)
        self.meters.latency.labels(self.pool, target.name).observe(self.clock.monotonic() - started)
        return upstream

    def _tool_call(self, container: str, seconds: float, failed: bool) -> None:
        self.meters.tool_seconds.labels(self.pool, container).observe(seconds)
        self.meters.tool_results.labels(self.pool, container, "error" if failed else "ok").inc()
        self.tool_calls.add(container, seconds, failed)

    async def _publish_tool_calls(self) -> None:
        """The newest calls' figures per container, to Redis for `status` (plain data)."""
        while True:
            await asyncio.sleep(PUBLISH_EVERY_S)
            figures = self.tool_calls.figures(int(self.clock.now().timestamp() * 1000))
            if figures:
                with contextlib.suppress(StoreError):
                    await self.store.publish_tool_calls(figures)

    # -- the sessions of a lease -------------------------------------------------------------
    async def _opened(self, target: Target, session: str, trace: LeaseTrace | None = None) -> None:
        if not await self.sessions.add(target.name, target.token, session, trace):
            await self._upstream(target.name).end(session)
            raise Refusal(429, "too_many_sessions", "a lease may open at most 64 MCP sessions", target.name)

    def _upstream(self, name: str) -> Upstream:
        assert self._http is not None, "the lifespan opened the client"
        return Upstream(self._http, self.authorizer.upstream(name))

    async def end_sessions(self, name: str, token: str) -> None:
        """End (DELETE) every session the lease ``token`` opened or was handed on ``name``; a job
        that crashed, or forgot, leaves nothing open for the next one. Its trace is kept first
        (by its policy), and the container's output folder emptied after (gateway/traces.py).

        The watcher and the preparer may both end a lease; whichever comes second finds nothing
        and empties nothing. By then the preparer may have started the next lease's trace in that
        folder: emptying it again wiped that trace, and the fake server failed the next tool call
        of the session (found by the soak: a 502 that no fault explained)."""
        async with self._ending.setdefault(name, asyncio.Lock()):
            opened, trace = await self.sessions.pop(name, token)
            if not opened and trace is None:
                return
            upstream = self._upstream(name)
            if trace is not None and self.traces is not None:
                await self.traces.finish(name, trace, await self.authorizer.last_outcome(name, token), upstream.call_tool)
            if opened:
                await asyncio.gather(*(upstream.end(session) for session in opened))
            if self.traces is not None:  # what the lease's sessions wrote (its snapshots, a trace) goes too
                await self.traces.empty(name)

    def _note(self, container: str, action: LogAction, details: Details) -> None:
        self.writer.write(LogKind.ERRORS, action_record(self.clock.now(), container, action, details, "ERROR"))

    async def metrics(self, _request: Request) -> Response:
        return Response(generate_latest(self.meters.registry), media_type="text/plain; version=0.0.4")

    async def not_found(self, request: Request) -> Response:
        return self._refuse(Refusal(404, "not_found", "the gateway serves /<pool>/<container>/mcp"), request)

    # -- refusals --------------------------------------------------------------------------
    def connection_refused(self, status: int, reason: str, message: str, client: str) -> None:
        """A connection the HTTP server itself cut (gateway/protocol.py): counted and reported as
        any refusal."""
        self.meters.refusals.labels(self.pool, reason).inc()
        self.said.refusal(Refusal(status, reason, message), client)

    def _refuse(self, refusal: Refusal, request: Request) -> Response:
        self.meters.refusals.labels(self.pool, refusal.reason).inc()
        client = request.client.host if request.client else "-"
        self.said.refusal(refusal, client)
        headers = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else {}
        if refusal.status in {429, 503}:
            headers["Retry-After"] = str(RETRY_AFTER_S)
        body = {"error": refusal.message, "container": refusal.container or None, **refusal.extra}
        return JSONResponse(body, refusal.status, headers=headers)

    # -- ended leases ------------------------------------------------------------------------
    async def _watch_leases(self) -> None:
        """Close every open stream, and end every session, whose token is no longer its container's
        current lease. Only what was open before the leases were read is judged: a stream or a
        session opened meanwhile belongs to a lease granted after that read."""
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            streams, sessions = list(self.streams.open), self.sessions.leases()
            if not streams and not sessions:
                continue
            try:
                current = await self.store.current_leases(sorted({name for name, _token in [*streams, *sessions]}))
            except StoreError:  # Redis unreachable: keep the streams; the holders fence themselves
                continue
            for name, token in streams:
                if current.get(name) != token:
                    for close in list(self.streams.open.get((name, token), {}).values()):
                        self.meters.closed.labels(self.pool).inc()
                        await close()
            for name, token in sessions:
                if current.get(name) != token:
                    with contextlib.suppress(StoreError):
                        await self.end_sessions(name, token)
