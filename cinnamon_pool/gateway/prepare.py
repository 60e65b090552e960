"""Prepared sessions: the next job's MCP session is ready before the job asks for it.

At 0.5 CPU most of a short job is Chromium starting: the browser, then the job's context and
page. The gateway takes both off the job's path. For each container of its host it holds:

- a **keeper** session: opened once, its blank page keeps the browser running between jobs
  (with ``--isolated`` the browser closes when its last session leaves). Never handed out.
  Without a gateway, ``supervise`` holds the keepers (``keep_only``), so a job pays for its
  context and page, not for a browser launch.
- a **prepared** session: initialized, its own context with a blank page loaded. The next
  job's ``initialize`` is answered with this session's ``initialize`` result and id
  (:meth:`Preparer.take`), so any MCP client works unchanged; the session is handed to exactly
  one lease, ever (it is taken from Redis with an atomic read-and-delete).

While it runs, the gateway keeps ``cinnamon:{P}:preparer:<host>`` alive (5 s, renewed every
second). A release of a container of that host then leaves it 'preparing' (``release.lua``);
without a live key (no gateway, one that stopped) it goes straight back to the pool. The gateway ends the ended lease's
sessions, prepares the next session (on ``rules.canary_share`` of releases it first runs the
residue canary in it: a fresh context in the running browser), then offers the container
(``prepared.lua``). The supervisor offers it anyway after ``gateway.prepare_timeout_s``.

Both sessions are kept in Redis (``cinnamon:{P}:sessions``, read back through ``decode``), so a
restarted gateway adopts them: each is checked with an MCP ``ping`` before it is trusted. The
sessions open no GET stream, so the server sends them no pings to answer (playwright-mcp pings
only over that stream); a keeper makes a tool call every ``keepalive_s`` so the server's
``--idle-timeout`` never closes the browser unseen, and a prepared session idle for
``gateway.prepare_refresh_s`` is made anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from loguru import logger

from cinnamon_pool import backoff, decode
from cinnamon_pool.canary import CANARY_CODE, residue_in
from cinnamon_pool.clock import SYSTEM_CLOCK, Clock
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.errors import SessionFailed, StoreError
from cinnamon_pool.gateway.tasks import stop
from cinnamon_pool.gateway.traces import Traces
from cinnamon_pool.gateway.upstream import Upstream
from cinnamon_pool.lease.gatewayside import GatewayStore
from cinnamon_pool.logs.actions import Detail, Details, LogAction
from cinnamon_pool.model import ContainerRecord, ContainerState, HeldSession, Preparation

BLANK = {"name": "browser_navigate", "arguments": {"url": "about:blank"}}
POLL_S = 0.1  # how often the gateway looks for containers to prepare
ANNOUNCE_MS = 5000  # the preparer key lives this long unless renewed (every second)
STOP_WITHIN_S = 2.0  # a stopping preparer waits this long for the preparations under way
KEEPALIVE_S = 240.0  # a keeper's tool call, well inside playwright-mcp's default idle timeout (1 h)


Reporter = Callable[[str, LogAction, Details], None]  # (container, action, details)
EndSessions = Callable[[str, str], Awaitable[None]]  # (container, token): end what that lease opened


@dataclass
class Preparer:
    config: PoolConfig
    store: GatewayStore
    http: httpx.AsyncClient
    end_sessions: EndSessions
    report: Reporter
    clock: Clock = SYSTEM_CLOCK
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # container -> its preparation
    purpose: dict[str, str] = field(default_factory=dict)  # container -> "free" or the released token
    keepers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    checked_at: dict[str, float] = field(default_factory=dict)  # held session field -> monotonic check
    retry: dict[str, tuple[int, float]] = field(default_factory=dict)  # container -> (failures, monotonic next try)
    unanswered: dict[str, list[str]] = field(default_factory=dict)  # container -> the offer Redis has not answered yet
    keep_only: bool = False  # no gateway: keepers only (the supervisor holds them, while it leads)
    traces: Traces | None = None  # prepared sessions start a trace of the lease they are handed to
    active: Callable[[], bool] = lambda: True

    def __post_init__(self) -> None:
        idle = self.config.container.browser_idle_s
        self.keepalive_s = KEEPALIVE_S if idle is None else min(KEEPALIVE_S, idle / 3)
        self.refresh_s = self.config.gateway.prepare_refresh_s if idle is None else min(self.config.gateway.prepare_refresh_s, idle / 2)
        self.identity = f"gateway-{secrets.token_hex(6)}"

    def upstream(self, name: str) -> Upstream:
        return Upstream(self.http, self.config.container.local_url(name))

    # -- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        announced = float("-inf")
        while True:
            try:
                if not self.keep_only and self.clock.monotonic() - announced >= 1.0:
                    await self.store.announce(self.identity, ANNOUNCE_MS)
                    announced = self.clock.monotonic()
                await self.step()
            except StoreError:
                pass  # Redis away: try again next round
            except Exception as error:  # a defect here must not end preparing for good: say it, go on
                logger.opt(exception=error).error("preparing sessions: {}: {}", type(error).__name__, error)
                await asyncio.sleep(1.0)
            await asyncio.sleep(POLL_S)

    async def step(self) -> None:
        """Start what this host's containers need: a keeper, a prepared session, a refresh."""
        if not self.active():
            return
        raw_records, raw_sessions = await self.store.records_and_sessions()
        records = self._records(raw_records)
        preparing = [name for name, record in records.items() if record.state is ContainerState.PREPARING]
        # the released token of each preparing container: its preparation's purpose
        released = await self.store.released_tokens(preparing)
        held = self._held(raw_sessions)
        await self._drop_orphans(raw_records, raw_sessions, held)
        now_ms = int(self.clock.now().timestamp() * 1000)
        for name, record in records.items():
            if record.state not in {ContainerState.AVAILABLE, ContainerState.PREPARING}:
                continue
            keeper = held.get(f"keeper|{name}")
            self._keep(record, keeper)
            if keeper is None or not keeper.lives_in(record.container_id, record.restarts) or self.keep_only:
                continue  # the keeper first: two sessions starting at once would start two browsers
            prepared = held.get(f"prepared|{name}")
            if record.state is ContainerState.PREPARING:
                token = _string(released.get(name) or b"")
                if self.purpose.get(name) != token:
                    self._start(record, token)
                elif name not in self.tasks and name in self.unanswered:
                    await self._send_offer(name)  # made during a failover or an outage: it stays 'preparing' until offered
            elif self._due(name) and not await self._usable(prepared, record, now_ms):
                self._start(record, "free")

    async def _drop_orphans(self, raw_records: Mapping[bytes, bytes], raw: Mapping[bytes, bytes], held: Mapping[str, HeldSession]) -> None:
        """Forget entries that are not sessions (garbage), or of a container no longer in the pool
        (retired): a keeper or a prepared session is only ever made for a registered container."""
        names = {_string(name) for name in raw_records}
        for field_name, value in raw.items():
            session = held.get(_string(field_name))
            if session is None or session.name not in names:
                await self._delete_if_unchanged(field_name, value)

    async def _delete_if_unchanged(self, field_name: bytes, value: bytes) -> None:
        """Delete the field only while it still holds ``value`` (another writer's is kept)."""
        await self.store.forget_session(field_name, value)

    def _records(self, raw: Mapping[bytes, bytes]) -> dict[str, ContainerRecord]:
        records = {}
        for field_name, value in raw.items():
            with contextlib.suppress(decode.BadValue):
                record = decode.record(field_name, value)
                if record.host == self.store.host:
                    records[record.name] = record
        return records

    def _held(self, raw: Mapping[bytes, bytes]) -> dict[str, HeldSession]:
        held = {}
        for field_name, value in raw.items():
            with contextlib.suppress(decode.BadValue):  # not ours: ignored, overwritten when we prepare
                session = decode.held_session(field_name, value)
                held[session.field] = session
        return held

    def _due(self, name: str) -> bool:
        """No preparation under way, and not backing off from a failed one."""
        return name not in self.tasks and self.clock.monotonic() >= self.retry.get(name, (0, 0.0))[1]

    async def _usable(self, prepared: HeldSession | None, record: ContainerRecord, now_ms: int) -> bool:
        """A prepared session for this very container, fresh, and alive."""
        if prepared is None or not prepared.lives_in(record.container_id, record.restarts):
            return False
        return now_ms - prepared.prepared_ms <= self.refresh_s * 1000 and await self._trusted(prepared)

    async def _trusted(self, session: HeldSession) -> bool:
        """A held session found in Redis is checked once (a ping) before it is relied upon."""
        if session.field in self.checked_at:
            return True
        if await self.upstream(session.name).ping(session.session):
            self.checked_at[session.field] = self.clock.monotonic()
            return True
        return False

    def _start(self, record: ContainerRecord, purpose: str) -> None:
        """Prepare ``record``'s next session, after the one under way (never cut short: a session
        opened halfway would be left in the container)."""
        before = self.tasks.get(record.name)
        self.purpose[record.name] = purpose
        task = asyncio.create_task(self._prepare(record, purpose, before), name=f"cinnamon-prepare-{record.name}")
        self.tasks[record.name] = task
        task.add_done_callback(functools.partial(self._forget, record.name))

    def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(name) is task:
            del self.tasks[name]

    # -- preparing -----------------------------------------------------------------------------
    async def _prepare(self, record: ContainerRecord, purpose: str, before: asyncio.Task[None] | None = None) -> None:
        """Make the container's next session; after a release, offer the container then."""
        if before is not None:
            await asyncio.wait({before})
        name, upstream, started = record.name, self.upstream(record.name), self.clock.monotonic()
        released = purpose != "free"
        result, detail = Preparation.OK, ""
        try:
            if released and purpose:
                await self.end_sessions(name, purpose)
            old = await self._take_field(f"prepared|{name}")
            if old is not None:
                await self._discard(old)
            session, answer = await asyncio.wait_for(self._open(upstream), self.config.gateway.prepare_timeout_s)
            if released and secrets.randbelow(10_000) < self.config.rules.canary_share * 10_000:
                residue = residue_in(
                    await upstream.call_tool(session, {"name": "browser_run_code_unsafe", "arguments": {"code": CANARY_CODE}})
                )
                if residue:
                    await upstream.end(session)
                    result, detail = Preparation.RESIDUE, residue
            if result == Preparation.OK:
                tracing = await asyncio.wait_for(self._start_trace(upstream, session), self.config.gateway.prepare_timeout_s)
                now_ms = int(self.clock.now().timestamp() * 1000)
                held = HeldSession("prepared", name, record.container_id, session, answer, now_ms, record.restarts, tracing)
                await self.store.put_session(held.field, held.to_json())
                self.checked_at[held.field] = self.clock.monotonic()
                self.retry.pop(name, None)
        except asyncio.CancelledError:
            raise
        except (SessionFailed, httpx.HTTPError, TimeoutError, StoreError) as error:
            result, detail = Preparation.FAILED, f"{type(error).__name__}: {error}"[:300]
            failures = self.retry.get(name, (0, 0.0))[0] + 1
            self.retry[name] = (failures, self.clock.monotonic() + backoff.after(backoff.PREPARE_FAILED, failures))
            self.report(
                name,
                LogAction.ERROR_OCCURRED,
                [(Detail.ERROR, f"preparing the next session failed: {detail}"), (Detail.CONTEXT, "prepare")],
            )
        if released:
            self.unanswered[name] = [name, purpose, result, detail, f"{(self.clock.monotonic() - started) * 1000:.1f}"]
            with contextlib.suppress(StoreError):  # sent again by the loop (the supervisor's time-out is the last resort)
                await self._send_offer(name)

    async def _send_offer(self, name: str) -> None:
        """Offer the container (``prepared.lua``: a no-op once it is no longer waiting for this
        preparation, so sending it again is safe). Kept until Redis answers: an offer lost to a
        failover would otherwise leave the container 'preparing' until the supervisor's time-out."""
        args = self.unanswered[name]
        await self.store.offer(args)
        if self.unanswered.get(name) is args:
            del self.unanswered[name]

    async def _start_trace(self, upstream: Upstream, session: str) -> bool:
        """Start the trace of the lease a prepared session will be handed to, when the pool records
        them (gateway/traces.py); after the canary, so the trace holds the holder's actions only.
        A server that cannot (an image without the devtools tools) leaves the session untraced."""
        if self.traces is None:
            return False
        try:
            for tool in self.traces.started():
                await upstream.call_tool(session, tool)
        except SessionFailed as error:
            logger.warning("a prepared session records no trace: {}", error)
            return False
        return True

    async def _discard(self, session: HeldSession) -> None:
        """End a prepared session nobody was handed; what its trace wrote goes with it."""
        await self.upstream(session.name).end(session.session)
        if session.tracing and self.traces is not None:
            await self.traces.empty(session.name)

    async def _open(self, upstream: Upstream) -> tuple[str, dict[str, Any]]:
        session, answer = await upstream.initialize()
        try:
            await upstream.call_tool(session, BLANK)
        except BaseException:
            await upstream.end(session)
            raise
        return session, answer

    def _keep(self, record: ContainerRecord, keeper: HeldSession | None) -> None:
        name = record.name
        if name in self.keepers:
            return
        if keeper is not None and keeper.lives_in(record.container_id, record.restarts):
            checked = self.checked_at.get(keeper.field)
            if checked is not None and self.clock.monotonic() - checked < self.keepalive_s:
                return
        task = asyncio.create_task(self._keep_alive(record, keeper), name=f"cinnamon-keeper-{name}")
        self.keepers[name] = task
        task.add_done_callback(lambda _done: self.keepers.pop(name, None))

    async def _keep_alive(self, record: ContainerRecord, keeper: HeldSession | None) -> None:
        """A tool call on the keeper (the server's idle timer starts over); a new keeper when it
        is gone (the container restarted, the gateway is new and the old one is dead)."""
        upstream = self.upstream(record.name)
        with contextlib.suppress(SessionFailed, httpx.HTTPError, TimeoutError, StoreError):
            if keeper is not None and keeper.lives_in(record.container_id, record.restarts):
                try:
                    await asyncio.wait_for(upstream.call_tool(keeper.session, BLANK), self.config.gateway.prepare_timeout_s)
                    self.checked_at[keeper.field] = self.clock.monotonic()
                    return
                except (SessionFailed, httpx.HTTPError, TimeoutError):
                    await upstream.end(keeper.session)
            session, answer = await asyncio.wait_for(self._open(upstream), self.config.gateway.prepare_timeout_s)
            now_ms = int(self.clock.now().timestamp() * 1000)
            held = HeldSession("keeper", record.name, record.container_id, session, answer, now_ms, record.restarts)
            await self.store.put_session(held.field, held.to_json())
            self.checked_at[held.field] = self.clock.monotonic()

    # -- handing over ----------------------------------------------------------------------------
    async def take(self, name: str, container_id: str, restarts: int, requested_version: str) -> HeldSession | None:
        """The container's prepared session for the job whose ``initialize`` this answers, or None
        (the job then opens its own: the cold path). Waits for a preparation under way. A session
        prepared in an earlier container of the slot (restarted, replaced) is not handed out."""
        running = self.tasks.get(name)
        if running is not None:
            await asyncio.wait({running}, timeout=self.config.gateway.prepare_timeout_s)
        session = await self._take_field(f"prepared|{name}")
        if session is None:
            return None
        version = str(session.result.get("protocolVersion", ""))
        if not session.lives_in(container_id, restarts):
            return None  # it died with its container (replaced, or restarted in place: same id, no sessions)
        if not version or version > requested_version:  # the client may not speak the newer version
            await self._discard(session)
            return None
        return session

    async def _take_field(self, field_name: str) -> HeldSession | None:
        """Read and delete in one transaction: whoever deletes it owns it, so it is handed out once."""
        raw = await self.store.take_session(field_name)
        self.checked_at.pop(field_name, None)
        if raw is None:
            return None
        try:
            return decode.held_session(field_name, raw)
        except decode.BadValue:
            return None

    async def close(self) -> None:
        """Stop announcing (releases go straight back to the pool) and stop what is under way."""
        with contextlib.suppress(StoreError, TimeoutError):  # unannounced, it lapses in ANNOUNCE_MS anyway
            await asyncio.wait_for(self.store.unannounce(self.identity), STOP_WITHIN_S)
        await stop([*self.tasks.values(), *self.keepers.values()], STOP_WITHIN_S)


def _string(raw: object) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
