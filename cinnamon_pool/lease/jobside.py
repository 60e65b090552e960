"""The job's side of the lease store: acquire (FIFO, waiting on its own wake list), renew,
release, and the gateway's offer of a prepared container.

Waiting is not polling: a queued acquirer blocks on its own wake list, onto which a release
pushes the grant in the same script that hands it the container; the block is sliced
(``waiter_ttl_s / 3``) only to keep the ticket alive, so a waiter that dies drops out of the
queue by itself.
"""

from __future__ import annotations

import secrets
from contextlib import suppress
from typing import Any

import redis
from tenacity import Retrying, retry_if_exception_type

from cinnamon_pool import backoff, decode, tokens
from cinnamon_pool.errors import InvalidIdentifier, LeaseError, PoolExhausted, PoolNotReady, ReplicasMissing, StoreError
from cinnamon_pool.lease.calls import acquire_request, claimed, counts_of, raise_rejection, release_args
from cinnamon_pool.lease.client import ScriptClient
from cinnamon_pool.lease.handle import JobFigures
from cinnamon_pool.lease.redis_errors import translating
from cinnamon_pool.lease.scripts import Op, Status
from cinnamon_pool.model import Grant, Holder, Outcome, Preparation, validate_container_name, validate_ticket, validate_token

NOT_READY_GRACE_S = 15.0  # how long an acquire waits for a supervisor to register the pool at all


class JobSide(ScriptClient):
    @translating
    def acquire(self, holder: Holder, timeout_s: float = 60.0, *, wait: bool = True) -> Grant:
        """Grant a container to ``holder``, waiting in FIFO order up to ``timeout_s``."""
        ticket, secret = secrets.token_hex(16), tokens.new_secret()
        request = acquire_request(holder, self.lease_ttl_s, self.max_lease_s, secret)
        started = self.clock.monotonic()
        deadline = started + timeout_s
        waiter_ttl_ms = int(self.waiter_ttl_s * 1000)
        counts: dict[str, int] = {}
        while True:
            reply = self._acquire_call(deadline, ticket, request, waiter_ttl_ms, "wait" if wait else "try")
            status = Status(reply[0])
            if status is Status.GRANTED:
                durable = self._durable(claimed(reply[1], secret), deadline)
                if durable is not None:
                    return durable
                ticket = secrets.token_hex(16)  # given back: ask anew (the old ticket's grant is gone)
                continue
            if status is Status.WAIT:
                counts = counts_of(reply[2])
            elif status is Status.EXHAUSTED:
                raise PoolExhausted(self.pool, self.clock.monotonic() - started, counts_of(reply[1]))
            remaining = deadline - self.clock.monotonic()
            if status is Status.NOT_READY:  # nothing queued: look again soon, up to a short grace
                waited = self.clock.monotonic() - started
                if waited >= min(timeout_s, NOT_READY_GRACE_S):
                    raise PoolNotReady(
                        f"pool {self.pool!r}: no supervisor has registered it in this Redis within {waited:.1f} s "
                        f"(its key {self.keys.meta} is missing): is `cinnamon-pool supervise` running with the "
                        f"same redis.url and pool.name?"
                    )
                self.clock.sleep(min(0.5, NOT_READY_GRACE_S - waited))
                continue
            if remaining <= 0:
                self.cancel(ticket)
                raise PoolExhausted(self.pool, self.clock.monotonic() - started, counts)
            try:
                woken = self.redis.blpop([self.keys.wake(ticket)], timeout=max(0.01, min(remaining, self.waiter_ttl_s / 3)))
            except (redis.ConnectionError, redis.TimeoutError):
                continue  # the next acquire call tells (and a handoff made meanwhile is kept under the ticket)
            if woken is not None:  # a release handed us the container
                try:
                    grant = claimed(woken[1], secret)
                except InvalidIdentifier:
                    continue  # pushed by someone else: not ours (our own grant is still to come)
                durable = self._durable(grant, deadline)
                if durable is not None:
                    return durable
                ticket = secrets.token_hex(16)

    def _acquire_call(self, deadline: float, *args: str | int) -> list[Any]:
        """acquire.lua's reply. Redis restarting or cut off: keep trying with the same ticket (a
        grant made meanwhile comes back: acquire is idempotent per ticket) while the deadline
        allows the next pause. The retry policy is built only once a call has failed: it costs
        15 µs, a fifth of what Redis spends on the call."""
        try:
            return self._run(Op.ACQUIRE, *args)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            failed = [error]  # the policy's first attempt is the call that just failed

            def attempt() -> list[Any]:
                if failed:
                    raise failed.pop()
                return self._run(Op.ACQUIRE, *args)

            unreachable = Retrying(
                retry=retry_if_exception_type((redis.ConnectionError, redis.TimeoutError)),
                wait=backoff.REDIS_UNREACHABLE,
                stop=lambda state: self.clock.monotonic() + state.upcoming_sleep > deadline,
                sleep=self.clock.sleep,
                reraise=True,
            )
            return unreachable(attempt)

    def _durable(self, grant: Grant, deadline: float) -> Grant | None:
        """``grant`` once ``wait_replicas`` replicas have it (Redis WAIT), so a failover cannot
        undo it; replication keeps the primary's order, so a write made after the grant on this
        connection and acknowledged covers the grant too, whoever wrote it (a handoff is written
        by the releasing job). Not acknowledged in time: the grant is given back, and None (try
        again) while ``deadline`` allows, else :class:`ReplicasMissing`."""
        if not self.wait_replicas:
            return grant
        pipe = self.redis.pipeline(transaction=False)  # one connection: WAIT counts its writes
        pipe.set(self.keys.durable, tokens.fingerprint(grant.token), px=60_000)
        pipe.wait(self.wait_replicas, self.wait_timeout_ms)
        try:
            _, acknowledged = pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError):
            acknowledged = -1  # the primary went away: whether the replicas have it is unknown
        if acknowledged >= self.wait_replicas:
            return grant
        with suppress(LeaseError, StoreError):
            self.release(grant.name, grant.token)
        if self.clock.monotonic() + 0.1 >= deadline:
            raise ReplicasMissing(self.pool, self.wait_replicas, max(0, acknowledged), self.wait_timeout_ms)
        self.clock.sleep(0.1)
        return None

    @translating
    def holds(self, name: str, token: str, client: redis.Redis | None = None) -> bool | None:
        """Whether ``token`` (the holder's own) is the current lease on ``name`` (one HGET, no
        script); None when Redis does not answer. ``client`` may be one with a short socket timeout."""
        try:
            raw = (client or self.redis).hget(self.keys.leases, name)
        except (redis.ConnectionError, redis.TimeoutError):
            return None
        try:
            return raw is not None and decode.lease(name, raw).token == tokens.fingerprint(token)
        except decode.BadValue:
            return False  # not a lease the scripts wrote: not ours either

    @translating
    def cancel(self, ticket: str) -> None:
        self._run(Op.CANCEL, validate_ticket(ticket))

    @translating
    def renew(self, name: str, token: str) -> int:
        """Extend the lease by its TTL; returns the new expiry (Redis ms). Raises if not ours."""
        reply = self._run(Op.RENEW, validate_container_name(name), tokens.fingerprint(token), int(self.lease_ttl_s * 1000))
        raise_rejection(name, reply)
        return int(reply[1])

    @translating
    def release(
        self,
        name: str,
        token: str,
        outcome: Outcome = Outcome.OK,
        *,
        recycle: bool = False,
        cleanup_ms: float | None = None,
        cleanup_note: str = "",
        artifacts: str = "",
        error: str = "",
        context: str = "",
        figures: JobFigures | None = None,
        trace: str = "",
    ) -> str:
        """End the lease; returns where the container went (available, handed, restarting,
        preparing) or noop.

        ``recycle`` sends the container to a restart (cleanup failed or left residue); the cleanup
        figures, the artifacts folder and a failed job's ``error`` (its exception, at most 500
        characters) and ``context`` (the tool or phase that failed) travel in the release event
        to the log files, with the job's ``figures`` (tool calls, their latency, console errors) and
        where its Playwright ``trace`` is kept (the gateway's answer said so). When the
        gateway of the container's host prepares sessions, the container waits in 'preparing'
        until the next job's session is ready (:meth:`prepared`)."""
        reply = self._run(
            Op.RELEASE,
            *release_args(
                name, token, outcome, self.error_threshold, recycle, cleanup_ms, cleanup_note, artifacts, error, context, figures, trace
            ),
        )
        if reply[0] == Status.NOOP:
            return "noop"
        raise_rejection(name, reply)
        return str(reply[1])

    @translating
    def prepared(self, name: str, token: str, result: str, detail: str = "", seconds: float | None = None) -> str:
        """Offer a 'preparing' container again (see prepared.lua): ``result`` ok, failed or timeout
        offers it, residue restarts it. ``token`` is the released lease's fingerprint, as the gateway
        reads it from ``last_tokens`` ('' = whichever). Returns
        where it went, or noop when it was not waiting for this preparation."""
        if result not in set(Preparation):
            raise ValueError(f"result={result!r}: use ok, failed, timeout or residue")
        reply = self._run(
            Op.PREPARED,
            validate_container_name(name),
            validate_token(token) if token else "",
            result,
            detail[:300],
            "" if seconds is None else f"{seconds * 1000:.1f}",
        )
        return "noop" if reply[0] == Status.NOOP else str(reply[1])
