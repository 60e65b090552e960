"""The lease store: the pool's state in Redis, changed only through the Lua scripts.

Script replies map to :class:`Status`, then to typed exceptions. Waiting is not polling: a
queued acquirer blocks on its own wake list, onto which a release pushes the grant in the same
script that hands it the container; the block is sliced (``waiter_ttl_s / 3``) only to keep the ticket
alive, so a waiter that dies drops out of the queue by itself.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from typing import Any

import redis
from tenacity import Retrying, retry_if_exception_type

from cinnamon_pool import backoff, decode, tokens
from cinnamon_pool.clock import SYSTEM_CLOCK, Clock
from cinnamon_pool.errors import (
    InvalidIdentifier,
    LeaseError,
    LeaseLost,
    LeaseNotOwned,
    NotLeader,
    PoolExhausted,
    PoolNotReady,
    ReplicasMissing,
)
from cinnamon_pool.events import LeaseEvent
from cinnamon_pool.keys import EVENTS_CONSUMER_GROUP, PoolKeys
from cinnamon_pool.lease.handle import JobFigures
from cinnamon_pool.lease.scripts import COMPARE_AND_DELETE_KEY, Op, Status, source
from cinnamon_pool.model import (
    ContainerRecord,
    ContainerState,
    Grant,
    Holder,
    Outcome,
    PoolSnapshot,
    Rejected,
    Waiter,
    validate_container_name,
    validate_host,
    validate_ticket,
    validate_token,
)

__all__ = ["Grant", "Holder", "LeaseStore", "PoolSnapshot"]

ERROR_CHARS = 500  # a failed job's error, as the errors log carries it
NOT_READY_GRACE_S = 15.0  # how long an acquire waits for a supervisor to register the pool at all


class LeaseStore:
    def __init__(
        self,
        client: redis.Redis,
        pool: str,
        *,
        lease_ttl_s: float = 30.0,
        max_lease_s: float = 1800.0,
        error_threshold: int = 3,
        waiter_ttl_s: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        host: str = "-",
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
    ) -> None:
        self.redis = client
        self.wait_replicas, self.wait_timeout_ms = wait_replicas, wait_timeout_ms
        self.pool = pool
        self.keys = PoolKeys(pool)
        self.lease_ttl_s = lease_ttl_s
        self.max_lease_s = max_lease_s
        self.error_threshold = error_threshold
        self.waiter_ttl_s = waiter_ttl_s
        self.clock = clock
        self.host = host
        self.leader_id = ""  # set by an elected supervisor: its writes are then fenced
        self._scripts = {op: client.register_script(source(op)) for op in Op}
        self._keys = self.keys.script_keys(host)

    def _run(self, op: Op, *args: Any) -> list[Any]:
        reply = self._scripts[op](keys=self._keys, args=list(args))
        return [_text(item) for item in reply] if isinstance(reply, list) else [reply]

    def _run_as_leader(self, op: Op, *args: Any) -> list[Any]:
        """A supervisor script: its last ARGV is the caller's leader id, checked by the script."""
        reply = self._run(op, *args, self.leader_id)
        if reply and reply[0] == Status.NOT_LEADER:
            raise NotLeader(f"supervisor {self.leader_id!r} is no longer the leader for host {self.host!r}: {op.value} refused")
        return reply

    # -- job side ------------------------------------------------------------------------
    def acquire(self, holder: Holder, timeout_s: float = 60.0, *, wait: bool = True) -> Grant:
        """Grant a container to ``holder``, waiting in FIFO order up to ``timeout_s``."""
        ticket, secret = secrets.token_hex(16), tokens.new_secret()
        request = acquire_request(holder, self.lease_ttl_s, self.max_lease_s, secret)
        started = self.clock.monotonic()
        deadline = started + timeout_s
        waiter_ttl_ms = int(self.waiter_ttl_s * 1000)
        counts: dict[str, int] = {}
        # Redis restarting or cut off: keep trying with the same ticket (a grant made meanwhile
        # comes back: acquire is idempotent per ticket) while the deadline allows the next pause.
        unreachable = Retrying(
            retry=retry_if_exception_type((redis.ConnectionError, redis.TimeoutError)),
            wait=backoff.REDIS_UNREACHABLE,
            stop=lambda state: self.clock.monotonic() + state.upcoming_sleep > deadline,
            sleep=self.clock.sleep,
            reraise=True,
        )
        while True:
            reply = unreachable(self._run, Op.ACQUIRE, ticket, request, waiter_ttl_ms, "wait" if wait else "try")
            status = Status(reply[0])
            if status is Status.GRANTED:
                durable = self._durable(claimed(reply[1], secret), deadline)
                if durable is not None:
                    return durable
                ticket = secrets.token_hex(16)  # given back: ask anew (the old ticket's grant is gone)
                continue
            if status is Status.WAIT:
                counts = _counts(reply[2])
            elif status is Status.EXHAUSTED:
                raise PoolExhausted(self.pool, self.clock.monotonic() - started, _counts(reply[1]))
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
        with suppress(LeaseError, redis.RedisError):
            self.release(grant.name, grant.token)
        if self.clock.monotonic() + 0.1 >= deadline:
            raise ReplicasMissing(self.pool, self.wait_replicas, max(0, acknowledged), self.wait_timeout_ms)
        self.clock.sleep(0.1)
        return None

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

    def cancel(self, ticket: str) -> None:
        self._run(Op.CANCEL, validate_ticket(ticket))

    def renew(self, name: str, token: str) -> int:
        """Extend the lease by its TTL; returns the new expiry (Redis ms). Raises if not ours."""
        reply = self._run(Op.RENEW, validate_container_name(name), tokens.fingerprint(token), int(self.lease_ttl_s * 1000))
        _raise_rejection(name, reply)
        return int(reply[1])

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
        _raise_rejection(name, reply)
        return str(reply[1])

    def prepared(self, name: str, token: str, result: str, detail: str = "", seconds: float | None = None) -> str:
        """Offer a 'preparing' container again (see prepared.lua): ``result`` ok, failed or timeout
        offers it, residue restarts it. ``token`` is the released lease's fingerprint, as the gateway
        reads it from ``last_tokens`` ('' = whichever). Returns
        where it went, or noop when it was not waiting for this preparation."""
        if result not in {"ok", "failed", "timeout", "residue"}:
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

    def held_sessions(self, containers: Mapping[str, tuple[str, int]]) -> dict[str, frozenset[str]]:
        """For each container (name -> its container id and restarts): the kinds of session its
        gateway holds in that very run of it ("keeper", "prepared"); a session made before a
        restart in place is not held. Values that do not decode are ignored here
        (the gateway overwrites them)."""
        fields = [f"{kind}|{name}" for name in containers for kind in ("keeper", "prepared")]
        held: dict[str, set[str]] = {name: set() for name in containers}
        for field_name, raw in zip(fields, self.redis.hmget(self.keys.sessions, fields), strict=True):
            if raw is None:
                continue
            with suppress(decode.BadValue):
                session = decode.held_session(field_name, raw)
                if session.lives_in(*containers[session.name]):
                    held[session.name].add(session.kind)
        return {name: frozenset(kinds) for name, kinds in held.items()}

    # -- supervisor side -----------------------------------------------------------------
    def register(self, record: ContainerRecord) -> str:
        """Add or re-add a ready container; returns the pool's epoch."""
        fields = record.to_json_dict()
        reply = self._run_as_leader(Op.REGISTER, json.dumps(fields), secrets.token_hex(8))
        return str(reply[1])

    def set_state(
        self, name: str, state: ContainerState, reason: str, *, only_if_free: bool = False, only_if_token: str = ""
    ) -> str | None:
        """Move a container (see set_state.lua); None when unknown, leased and ``only_if_free``,
        or no longer held by ``only_if_token`` (the lease an operator meant to end, as Redis has
        it: its fingerprint)."""
        guard = "if_free" if only_if_free else f"if_token:{validate_token(only_if_token)}" if only_if_token else ""
        reply = self._run_as_leader(Op.SET_STATE, validate_container_name(name), ContainerState(state).value, reason, guard)
        return None if reply[0] in {Status.UNKNOWN, Status.BUSY} else str(reply[1])

    def end_lease(self, name: str, token: str, reason: str) -> bool:
        """End the lease of ``token`` (its fingerprint, as read from the pool) on ``name`` now (its
        holder gets LeaseLost) and restart the container before it serves again; False when that
        lease no longer holds it."""
        return self.set_state(name, ContainerState.RESTARTING, reason, only_if_token=token) is not None

    def wait_queue(self, limit: int = 100) -> list[Waiter]:
        """The oldest ``limit`` waiting acquirers, first in line first (unreadable tickets skipped:
        acquire drops them)."""
        try:  # the members as Redis has them (bytes): no decoding of what may not be ours
            tickets: list[Any] = list(self.redis.zrange(self.keys.waiters, 0, limit - 1))
            raws = self.redis.hmget(self.keys.tickets, tickets) if tickets else []
        except redis.ResponseError:
            return []  # a key of the wrong type: the supervisor reports and drops it
        queue = []
        for raw in raws:
            if raw is not None:
                with suppress(decode.BadValue):
                    queue.append(decode.waiter(raw))
        return queue

    def request_size(self, host: str, size: int) -> None:
        """Ask the leader of ``host`` to set its desired size (``cinnamon-pool scale``); kept in
        Redis until that supervisor applies it, so a supervisor that starts later applies it too."""
        if size < 0:
            raise ValueError(f"size {size}: must be 0 or more")
        self.redis.set(self.keys.size_request(host), str(size))

    def size_request(self, host: str) -> bytes | str | None:
        """The raw size request for ``host`` (decoded by the supervisor: it may not be ours). A
        key of another type is not ours either: it is deleted, and reported as a bad value."""
        try:
            raw: bytes | str | None = self.redis.get(self.keys.size_request(host))
        except redis.ResponseError:
            self.redis.delete(self.keys.size_request(host))
            return b"(a key of another type)"
        return raw

    def drop_size_request(self, host: str, raw: bytes | str) -> None:
        """Delete the request once applied (or refused), unless another arrived meanwhile."""
        self.redis.eval(COMPARE_AND_DELETE_KEY, 1, self.keys.size_request(host), raw)

    def deregister(self, name: str, reason: str, *, only_if_unleased: bool = False) -> bool:
        """Remove a container's record (revoking its lease unless ``only_if_unleased``).

        Returns False when it was not registered, or is leased and ``only_if_unleased``."""
        reply = self._run_as_leader(Op.DEREGISTER, validate_container_name(name), reason, "if_unleased" if only_if_unleased else "")
        return reply[0] == Status.OK and bool(int(reply[1]))

    def set_size(self, host: str, size: int, reason: str, *, mode: str = "set", cooldown_s: float = 0.0) -> int:
        """Set a Docker host's desired size (the slots it serves); returns the size in force.

        ``mode``: "set"; "init" adopts a size already stored (a restarted or standby supervisor);
        "grow" only when no host of the pool grew within ``cooldown_s`` (one host answers waiters)."""
        if size < 0 or mode not in {"set", "init", "grow"}:
            raise ValueError(f"size {size}, mode {mode!r}: size >= 0, mode set, init or grow")
        reply = self._run_as_leader(Op.SET_SIZE, validate_host(host), size, mode, reason[:200], int(cooldown_s * 1000))
        return decode.integer(reply[1], "size")

    def join(self, host: str, had: int | None = None) -> int:
        """This Docker host's index in the pool (claimed on first call, kept for good); ``had``
        asks for the index the host used before Redis lost its data."""
        reply = self._run_as_leader(Op.HOST, validate_host(host), "" if had is None else had)
        return decode.integer(reply[1], "host index", minimum=0)

    def preparing_hosts(self, hosts: Sequence[str]) -> set[str]:
        """The hosts whose gateway prepares sessions now (its preparer key is live)."""
        return self._hosts_with(self.keys.preparer, hosts)

    def live_hosts(self, hosts: Sequence[str]) -> set[str]:
        """The hosts whose supervisor holds its leader key now."""
        return self._hosts_with(self.keys.leader, hosts)

    def _hosts_with(self, key: Callable[[str], str], hosts: Sequence[str]) -> set[str]:
        """The hosts whose expiring per-host key exists now; one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for host in hosts:
            pipe.exists(key(host))
        return {host for host, alive in zip(hosts, pipe.execute(), strict=True) if alive}

    def forget(self, rejected: Rejected) -> bool:
        """Drop a value the decoder rejected, if it is still the same bytes (see forget.lua)."""
        if rejected.key not in {"containers", "leases", "free", "expiries", "desired"} or not rejected.field:
            return False
        value = b"" if rejected.key in {"free", "expiries"} else rejected.raw
        reply = self._run_as_leader(Op.FORGET, rejected.key, rejected.raw_field, value)
        return bool(int(reply[1]))

    def leadership(self, op: str, identity: str, lease_s: float) -> bool:
        """Claim, renew or resign this host's supervisor leadership; True when it holds."""
        return bool(self._run(Op.LEADER, op, identity, int(lease_s * 1000))[0] == Status.OK)

    def forget_state(self) -> None:
        """Drop the pool's state as a Redis that lost it would (the event stream stays). For a
        failover that lost writes: the supervisors then recycle every container and a new epoch
        makes every earlier token dead."""
        self.redis.delete(*self.keys.all_state_keys())

    def reap(self) -> list[str]:
        """End expired leases; returns the containers that must be recycled."""
        return [str(name) for name in self._run_as_leader(Op.REAP) if name]

    def set_draining(self, draining: bool) -> None:
        if draining:
            self.redis.set(self.keys.draining, "1")
        else:
            self.redis.delete(self.keys.draining)

    def record_readings(self, memory_mb: Mapping[str, float], cpu_percent: Mapping[str, float]) -> None:
        """Publish the supervisor's latest memory and CPU readings (plain data, no lease decision)."""
        pipe = self.redis.pipeline(transaction=False)
        for key, readings in ((self.keys.memory, memory_mb), (self.keys.cpu, cpu_percent)):
            pipe.delete(key)
            if readings:
                pipe.hset(key, mapping={name: f"{value:.1f}" for name, value in readings.items()})
        pipe.execute()

    def snapshot(self) -> PoolSnapshot:
        """The pool in one MULTI/EXEC. Never raises for bad data: values that do not decode, and
        keys of the wrong type, come back in ``PoolSnapshot.rejected``."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(self.keys.meta, "epoch")
        pipe.hgetall(self.keys.containers)
        pipe.hgetall(self.keys.leases)
        pipe.zrange(self.keys.free, 0, -1, withscores=True)
        pipe.zcard(self.keys.waiters)
        pipe.exists(self.keys.draining)
        pipe.hgetall(self.keys.memory)
        pipe.hgetall(self.keys.desired)
        pipe.hgetall(self.keys.hosts)
        pipe.hgetall(self.keys.cpu)
        pipe.time()
        names = ("epoch", "containers", "leases", "free", "waiting", "draining", "memory", "desired", "hosts", "cpu", "time")
        replies = pipe.execute(raise_on_error=False)
        if isinstance(replies[-1], Exception):
            raise replies[-1]
        return decode.snapshot(dict(zip(names, replies, strict=True)))

    # -- event stream --------------------------------------------------------------------
    def ensure_consumer_group(self) -> None:
        try:
            self.redis.xgroup_create(self.keys.events, EVENTS_CONSUMER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def read_events(self, consumer: str, count: int = 500, block_ms: int | None = None) -> Iterator[tuple[str, LeaseEvent | Rejected]]:
        """Yield new events for this consumer, pending ones (read, never acknowledged) first: the
        entry id and the decoded event, or a :class:`Rejected` for an entry that does not decode
        (to be reported and acknowledged like any other)."""
        for start in ("0", ">"):
            reply: Any = self.redis.xreadgroup(
                EVENTS_CONSUMER_GROUP, consumer, {self.keys.events: start}, count=count, block=block_ms if start == ">" else None
            )
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    entry = _text(entry_id)
                    if fields is None:  # trimmed away while pending
                        continue
                    try:
                        yield entry, decode.event(entry, fields)
                    except decode.BadValue as error:
                        shown = " ".join(f"{decode.shorten(k, 20)}={decode.shorten(v, 30)}" for k, v in fields.items())
                        yield entry, Rejected("events", entry, decode.shorten(shown, 120), str(error))

    def ack_events(self, entry_ids: Sequence[str]) -> None:
        if entry_ids:
            self.redis.xack(self.keys.events, EVENTS_CONSUMER_GROUP, *entry_ids)


def acquire_request(holder: Holder, lease_ttl_s: float, max_lease_s: float, secret: str) -> str:
    """acquire.lua's ARGV[2]: who asks, for how long, and the digest of the secret that only the
    acquirer knows (shared by the sync and asyncio clients; see tokens.py)."""
    return json.dumps(
        {
            "test_run_id": holder.test_run_id,
            "job_id": holder.job_id,
            "worker": holder.worker,
            "artifacts": holder.artifacts,
            "ttl_ms": int(lease_ttl_s * 1000),
            "cap_ms": int(max_lease_s * 1000),
            "random": tokens.secret_digest(secret),
        }
    )


def release_args(
    name: str,
    token: str,
    outcome: Outcome,
    error_threshold: int,
    recycle: bool = False,
    cleanup_ms: float | None = None,
    cleanup_note: str = "",
    artifacts: str = "",
    error: str = "",
    context: str = "",
    figures: JobFigures | None = None,
    trace: str = "",
) -> list[str | int]:
    """release.lua's ARGV (shared by the sync and asyncio clients)."""
    return [
        validate_container_name(name),
        tokens.fingerprint(token),
        Outcome(outcome).value,
        error_threshold,
        "recycle" if recycle else "",
        "" if cleanup_ms is None else f"{cleanup_ms:.1f}",
        cleanup_note[:500],
        artifacts[:500],
        error[:ERROR_CHARS],
        context[:100],
        *_figures(figures or JobFigures()),
        trace[:500],
    ]


def _figures(figures: JobFigures) -> list[str | int]:
    """The job's figures as release.lua's ARGV[11..14] ('' for a latency without calls)."""

    def ms(seconds: float | None) -> str:
        return "" if seconds is None else f"{seconds * 1000:.1f}"

    return [figures.tool_calls, ms(figures.tool_p50_s), ms(figures.tool_max_s), figures.console_errors]


def claimed(raw: object, secret: str) -> Grant:
    """A grant from a script's reply or a wake list, with the token that ``secret`` makes of its
    fingerprint; :class:`InvalidIdentifier` when it was not made for that secret."""
    grant = decode.grant(raw)
    return dataclasses.replace(grant, token=tokens.claim(grant.token, secret))


def _text(value: Any) -> Any:
    """A script's reply item as text. Replies can carry a member name read from Redis (reap's
    expired names), which need not be UTF-8: it comes back escaped, never as an exception."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _counts(raw: Any) -> dict[str, int]:
    """The counts a script reports with WAIT or EXHAUSTED (our own reply, decoded all the same)."""
    try:
        data = decode.json_object(raw, "counts")
        return {str(k): decode.integer(v, k) for k, v in data.items()}
    except decode.BadValue:
        return {}


def _raise_rejection(name: str, reply: list[Any]) -> None:
    status = Status(reply[0])
    if status is Status.LOST:
        raise LeaseLost(name, str(reply[1]))
    if status is Status.NOT_OWNER:
        raise LeaseNotOwned(name, str(reply[1]))
