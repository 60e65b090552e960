"""The asyncio lease client: what the gateway needs to hold leases for clients that connect
(acquire in the FIFO queue, renew, release), over the same Lua files, keys and arguments as the
sync :class:`~cinnamon_pool.lease.store.LeaseStore`. Redis errors leave here as
:class:`~cinnamon_pool.errors.StoreError`
(:class:`~cinnamon_pool.errors.StoreUnavailable` when Redis does not answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from loguru import logger
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from cinnamon_pool import tokens
from cinnamon_pool.clock import SYSTEM_CLOCK, Clock
from cinnamon_pool.errors import InvalidIdentifier, PoolExhausted, PoolNotReady, StoreError
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.calls import acquire_request, claimed, counts_of, raise_rejection, release_args, text
from cinnamon_pool.lease.redis_errors import awaiting
from cinnamon_pool.lease.scripts import Op, Status, source
from cinnamon_pool.model import ContainerState, Grant, Holder, Outcome, validate_container_name, validate_ticket, validate_token

WAITER_TTL_S = 10.0  # as the sync store's: a waiter that dies drops out of the queue by itself
LEAVE_RETRY_S = 0.05  # the first pause before leaving the queue is tried again (doubling to 1 s)


class AsyncLeaseClient:
    def __init__(
        self,
        client: aioredis.Redis,
        pool: str,
        host: str,
        *,
        lease_ttl_s: float,
        max_lease_s: float,
        error_threshold: int,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.client, self.pool, self.clock = client, pool, clock
        self.keys = PoolKeys(pool)
        self.lease_ttl_s, self.max_lease_s, self.error_threshold = lease_ttl_s, max_lease_s, error_threshold
        self._scripts = {op: client.register_script(source(op)) for op in (Op.ACQUIRE, Op.CANCEL, Op.RENEW, Op.RELEASE, Op.SET_STATE)}
        self._keys = self.keys.script_keys(host)

    async def _run(self, op: Op, *args: Any) -> list[Any]:
        reply = await awaiting(self._evalsha(self._scripts[op], args))
        return [text(item) for item in reply] if isinstance(reply, list) else [reply]

    async def _evalsha(self, script: AsyncScript, args: tuple[Any, ...]) -> Any:
        """As the sync client runs its scripts (client.py): EVALSHA through ``execute_command``,
        the script loaded again when the server's cache lost it."""
        try:
            return await self.client.execute_command("EVALSHA", script.sha, len(self._keys), *self._keys, *args)
        except NoScriptError:
            script.sha = await self.client.script_load(script.script)
            return await self.client.execute_command("EVALSHA", script.sha, len(self._keys), *self._keys, *args)

    async def acquire(
        self, holder: Holder, timeout_s: float, on_wait: Callable[[dict[str, int]], None] | None = None, *, secret: str = ""
    ) -> Grant:
        """A grant for ``holder`` from the pool's FIFO queue (as jobs get theirs), waiting up to
        ``timeout_s``; :class:`PoolExhausted` with the pool's counts after it. ``secret``: the
        token's secret part (tokens.py), when the caller must be able to make it again."""
        ticket, secret = secrets.token_hex(16), secret or tokens.new_secret()
        request = acquire_request(holder, self.lease_ttl_s, self.max_lease_s, secret)
        started = self.clock.monotonic()
        deadline, counts = started + timeout_s, {}
        try:
            while True:
                reply = await self._run(Op.ACQUIRE, ticket, request, int(WAITER_TTL_S * 1000), "wait")
                status = Status(reply[0])
                if status is Status.GRANTED:
                    return claimed(reply[1], secret)
                if status is Status.NOT_READY:
                    raise PoolNotReady(f"pool {self.pool!r}: no supervisor has registered it in this Redis")
                if status is Status.EXHAUSTED:
                    raise PoolExhausted(self.pool, self.clock.monotonic() - started, counts_of(reply[1]))
                counts = counts_of(reply[2])
                if on_wait is not None:
                    on_wait(counts)
                remaining = deadline - self.clock.monotonic()
                if remaining <= 0:
                    raise PoolExhausted(self.pool, self.clock.monotonic() - started, counts)
                woken = await awaiting(self.client.blpop([self.keys.wake(ticket)], timeout=max(0.01, min(remaining, WAITER_TTL_S / 3))))
                if woken is not None:
                    with contextlib.suppress(InvalidIdentifier):  # pushed by someone else: not ours
                        return claimed(woken[1], secret)
        except BaseException:
            # gave up (time-out, cancelled: the client went away): leave the queue. Shielded: a
            # second cancellation (the request's task cancelled while this one unwinds) must not
            # abort the leaving and leave the ticket queued.
            await asyncio.shield(self._leave(validate_ticket(ticket)))
            raise

    async def _leave(self, ticket: str) -> None:
        """Take ``ticket`` out of the queue (a grant handed to it meanwhile goes back to the pool).
        Tried again while Redis does not answer (a burst of clients hanging up together opens as
        many connections at once), until the ticket's own expiry would drop it anyway."""
        deadline, delay = self.clock.monotonic() + WAITER_TTL_S, LEAVE_RETRY_S
        while True:
            try:
                await self._run(Op.CANCEL, ticket)
                return
            except Exception as error:  # logged, never raised: it would hide why the acquire ended
                retried = isinstance(error, StoreError)
                if not retried or self.clock.monotonic() + delay >= deadline:
                    logger.warning("ticket {} stays queued until it expires: {}: {}", ticket, type(error).__name__, error)
                    return
                logger.info("ticket {}: leaving the queue, tried again in {:g} s: {}", ticket, delay, error)
            await asyncio.sleep(delay)
            delay = min(2 * delay, 1.0)

    async def renew(self, name: str, token: str) -> int:
        reply = await self._run(Op.RENEW, validate_container_name(name), tokens.fingerprint(token), int(self.lease_ttl_s * 1000))
        raise_rejection(name, reply)
        return int(reply[1])

    async def release(
        self, name: str, token: str, outcome: Outcome = Outcome.OK, *, error: str = "", context: str = "", trace: str = ""
    ) -> str:
        reply = await self._run(
            Op.RELEASE, *release_args(name, token, outcome, self.error_threshold, error=error, context=context, trace=trace)
        )
        if reply[0] == Status.NOOP:
            return "noop"
        raise_rejection(name, reply)
        return str(reply[1])

    async def drain(self, name: str, fence: str, reason: str) -> bool:
        """Restart ``name`` when the lease ``fence`` (its token's fingerprint) ends; False when that
        lease no longer holds it."""
        guard = f"if_token:{validate_token(fence)}"
        reply = await self._run(Op.SET_STATE, validate_container_name(name), ContainerState.DRAINING.value, reason, guard, "")
        return bool(reply[0] == Status.OK)
