"""``cinnamon-pool dashboard``: the live pool, the runs with their artifacts and traces, the
report, and the operator's actions, over Redis and the log files.

- ``/``: the live pool (server-sent events from ``/live/events``, one a second: containers with
  state, memory, CPU, lease age and holder; the wait queue; recent refusals);
- ``/runs``: every lease in the logs, searchable (``?q=``; ``?format=json`` gives the same list);
  ``/runs/<day>/<run>``: its screenshot, snapshot, console, traceback and **Open trace**, which
  opens its ``trace.zip`` in playwright-core's trace viewer, served here (``/trace/``);
- ``/report``: the analyzer's report for a chosen window;
- ``POST /actions``: drain, resume, scale, restart a container, kill a run (a CSRF token and a
  confirmation in the page).

Served on loopback without a login. Anywhere else it needs HTTP Basic with
``dashboard.password`` (any user name) or an API key (``keys create``) as the password or a
bearer token, and TLS (``dashboard.tls_cert``/``tls_key``) unless ``allow_plain_http``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as _dt
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from cinnamon_pool import operator
from cinnamon_pool.clock import SYSTEM_CLOCK, Clock
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.dashboard import pages
from cinnamon_pool.dashboard.runs import artifacts, recent_runs, records_of
from cinnamon_pool.errors import CinnamonError, ConfigError
from cinnamon_pool.logs.actions import LogAction
from cinnamon_pool.logs.analyzer import Analyzer
from cinnamon_pool.logs.files import iter_records
from cinnamon_pool.logs.html import render_html
from cinnamon_pool.model import validate_test_run_id
from cinnamon_pool.pool import ContainerPool

LIVE_EVERY_S = 1.0
REFUSALS_EVERY_S = 5.0  # the errors log is read again this often for the live page's refusals
TEXT_FILES = {"snapshot.md": "Snapshot", "console.log": "Console", "traceback.txt": "Traceback"}
MEDIA = {"screenshot.png": "image/png", "trace.zip": "application/zip", **dict.fromkeys(TEXT_FILES, "text/plain; charset=utf-8")}
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "X-Frame-Options": "SAMEORIGIN"}
POLICY = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'"
ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def find_viewer(config: PoolConfig) -> Path | None:
    """playwright-core's trace viewer: ``dashboard.trace_viewer``, else the one ``make images``
    installed beside the working directory or this package."""
    if config.dashboard.trace_viewer:
        return Path(config.dashboard.trace_viewer)
    for top in (Path.cwd(), Path(__file__).resolve().parents[2]):
        for found in sorted(top.glob(".build/images/npm-playwright-mcp-*/node_modules/playwright-core/lib/vite/traceViewer"), reverse=True):
            if (found / "index.html").is_file():
                return found
    return None


class Dashboard:
    def __init__(self, config: PoolConfig, pool: ContainerPool | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config, self.clock = config, clock
        self.pool = pool or ContainerPool(config)
        self.logs = Path(config.logs.dir)
        self.csrf = secrets.token_hex(16)
        self.viewer = find_viewer(config)
        self._refusals: tuple[float, list[str]] = (float("-inf"), [])

    def app(self) -> Starlette:
        routes: list[BaseRoute] = [
            Route("/", self.live_page),
            Route("/live/events", self.live_events),
            Route("/live.json", self.live_json),
            Route("/runs", self.runs),
            Route("/runs/{day}/{folder}", self.run),
            Route("/files/{day}/{folder}/{name}", self.file),
            Route("/report", self.report),
            Route("/actions", self.act, methods=["POST"]),
            Route("/favicon.ico", lambda _r: Response(status_code=204)),  # (the report's page names none)
            Route("/static/live.js", lambda _r: Response(pages.LIVE_JS, media_type="text/javascript")),
            Route("/static/confirm.js", lambda _r: Response(pages.CONFIRM_JS, media_type="text/javascript")),
        ]
        if self.viewer is not None:
            routes.append(Mount("/trace", StaticFiles(directory=self.viewer, html=True)))
        return Starlette(routes=routes)

    # -- live ----------------------------------------------------------------------------------
    async def live_page(self, request: Request) -> Response:
        draining = (await asyncio.to_thread(self.pool.status)).get("draining", False)
        return self._html(pages.live_page(self.pool.name, bool(draining), self.csrf, request.query_params.get("said", "")))

    def live(self) -> dict[str, Any]:
        status = self.pool.status()
        read_at, refusals = self._refusals
        if time.monotonic() - read_at > REFUSALS_EVERY_S:
            refusals = self._recent_refusals()
            self._refusals = (time.monotonic(), refusals)
        return {**status, "refusals": refusals}

    def _recent_refusals(self, count: int = 20) -> list[str]:
        today = self.clock.now().date()
        found = [r for r in iter_records(self.logs, today, today) if r.action == LogAction.ACCESS_DENIED]
        return [f"{r.at:%H:%M:%S} {r.subject}: {r.detail('Reason')} ({r.detail('Client')})" for r in found[-count:][::-1]]

    async def live_json(self, _request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(self.live))

    async def live_events(self, request: Request) -> Response:
        async def events() -> AsyncIterator[str]:
            while not await request.is_disconnected():
                try:
                    yield f"data: {json.dumps(await asyncio.to_thread(self.live))}\n\n"
                except CinnamonError as error:  # Redis away: say so, keep the stream
                    yield f"event: trouble\ndata: {json.dumps(str(error))}\n\n"
                await asyncio.sleep(LIVE_EVERY_S)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    # -- runs ----------------------------------------------------------------------------------
    async def runs(self, request: Request) -> Response:
        query = request.query_params.get("q", "")[:200]
        started = time.perf_counter()
        found = await asyncio.to_thread(recent_runs, self.logs, self.clock.now().date(), query)
        if request.query_params.get("format") == "json":
            return JSONResponse([run.to_json() for run in found])
        return self._html(pages.runs_page(found, query, (time.perf_counter() - started) * 1000))

    async def run(self, request: Request) -> Response:
        day, folder = _day(request.path_params["day"]), request.path_params["folder"]
        test_run_id = request.query_params.get("run", folder)
        try:
            validate_test_run_id(test_run_id)
        except CinnamonError:
            return PlainTextResponse(f"not a test run id: {test_run_id[:80]!r}", status_code=400)
        files = artifacts(self.logs, f"{day:%Y-%m-%d}", folder)
        texts = {TEXT_FILES[name]: path.read_text(errors="replace")[:200_000] for name, path in files.items() if name in TEXT_FILES}
        records = await asyncio.to_thread(lambda: list(records_of(self.logs, day, test_run_id)))
        return self._html(pages.run_page(f"{day:%Y-%m-%d}", folder, test_run_id, records, files, texts))

    async def file(self, request: Request) -> Response:
        day, folder, name = _day(request.path_params["day"]), request.path_params["folder"], request.path_params["name"]
        path = artifacts(self.logs, f"{day:%Y-%m-%d}", folder).get(name)
        if path is None:
            return PlainTextResponse("no such artifact", status_code=404)
        return FileResponse(path, media_type=MEDIA[name], headers=HEADERS)

    # -- report --------------------------------------------------------------------------------
    async def report(self, request: Request) -> Response:
        try:
            hours = float(request.query_params.get("hours", "24"))
        except ValueError:
            hours = 24.0
        since = self.clock.now() - _dt.timedelta(hours=max(hours, 0.1))

        def build() -> str:
            report = Analyzer(since=since).feed(iter_records(self.logs, since.date(), None)).report()
            return render_html(report, f"cinnamon-pool report: the last {hours:g} hours")

        html = await asyncio.to_thread(build)
        return self._html(html.replace("<body>", "<body>" + pages.report_form(hours), 1))

    # -- actions -------------------------------------------------------------------------------
    async def act(self, request: Request) -> Response:
        form = await request.form()
        if not hmac.compare_digest(str(form.get("csrf", "")), self.csrf) or not _same_origin(request):
            return PlainTextResponse("refused: the form's CSRF token is missing or stale; reload the page", status_code=403)
        action, value = str(form.get("action", "")), str(form.get("value", "")).strip()
        try:
            said = await asyncio.to_thread(self._do, action, value)
        except (operator.OperatorRefused, ValueError, CinnamonError) as error:
            said = f"{action} refused: {error}"
        return RedirectResponse(f"/?{urlencode({'said': said})}", status_code=303)

    def _do(self, action: str, value: str) -> str:
        if action in {"drain", "undrain"}:
            return operator.drain(self.pool, undo=action == "undrain")
        if action == "scale":
            if not value.isdigit():
                raise ValueError(f"size {value[:20]!r} is not a whole number")
            host = operator.scale_host(self.pool, int(value), None)
            return f"host {host}: size {value} asked for; its supervisor applies it"
        if action == "restart":
            return operator.restart(self.pool, value)
        if action == "kill":
            return "; ".join(operator.kill_run(self.pool, value))
        raise ValueError(f"unknown action {action[:20]!r} (drain, undrain, scale, restart, kill)")

    def _html(self, text: str) -> HTMLResponse:
        return HTMLResponse(text, headers={**HEADERS, "Content-Security-Policy": POLICY})


def _day(text: str) -> _dt.date:
    try:
        return _dt.date.fromisoformat(text)
    except ValueError:
        return _dt.date.min


def _same_origin(request: Request) -> bool:
    """A browser's POST from another site carries its Origin: refused."""
    origin = request.headers.get("origin")
    return origin is None or origin.split("://", 1)[-1] == request.headers.get("host", "")


class Guard:
    """Away from loopback: HTTP Basic (``dashboard.password``, any user) or an API key (as the
    Basic password or a bearer token). On loopback every request passes."""

    def __init__(self, app: ASGIApp, config: PoolConfig, key_valid: Callable[[str], Awaitable[bool]]) -> None:
        self.app, self.password, self.key_valid = app, config.dashboard.password, key_valid
        self.open = config.dashboard.loopback

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.open or await self._allowed(dict(scope["headers"]).get(b"authorization", b"")):
            await self.app(scope, receive, send)
            return
        refusal = PlainTextResponse(
            "sign in: the dashboard's password, or an API key", status_code=401, headers={"WWW-Authenticate": 'Basic realm="cinnamon-pool"'}
        )
        await refusal(scope, receive, send)

    async def _allowed(self, header: bytes) -> bool:
        scheme, _, value = header.decode("latin-1").partition(" ")
        secret = value.strip()
        if scheme.lower() == "basic":
            try:
                secret = base64.b64decode(secret, validate=True).decode("utf-8", "replace").partition(":")[2]
            except binascii.Error:
                return False
        elif scheme.lower() != "bearer" or not secret:
            return False
        if self.password and hmac.compare_digest(hashlib.sha256(secret.encode()).digest(), hashlib.sha256(self.password.encode()).digest()):
            return True
        return await self.key_valid(secret)


def check_exposure(config: PoolConfig) -> None:
    """Away from loopback the dashboard needs TLS or an explicit ``allow_plain_http``."""
    settings = config.dashboard
    if not settings.loopback and not settings.tls_cert and not settings.allow_plain_http:
        raise ConfigError(
            "dashboard.listen", settings.listen, "is not loopback: set dashboard.tls_cert and tls_key, or dashboard.allow_plain_http = true"
        )
