"""Reads of the pool for everyone (status, the supervisor's observe, the dashboard): the snapshot
in one MULTI/EXEC, the wait queue, the sessions a gateway holds, the hosts that are live. Values
that do not decode are skipped or reported, never raised."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any

import redis

from cinnamon_pool import decode
from cinnamon_pool.lease.client import ScriptClient
from cinnamon_pool.lease.redis_errors import translating
from cinnamon_pool.lease.replication import Lineage
from cinnamon_pool.model import PoolSnapshot, Waiter


class PoolReads(ScriptClient):
    @translating
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

    @translating
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

    @translating
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

    @translating
    def preparing_hosts(self, hosts: Sequence[str]) -> set[str]:
        """The hosts whose gateway prepares sessions now (its preparer key is live)."""
        return self._hosts_with(self.keys.preparer, hosts)

    @translating
    def live_hosts(self, hosts: Sequence[str]) -> set[str]:
        """The hosts whose supervisor holds its leader key now."""
        return self._hosts_with(self.keys.leader, hosts)

    @translating
    def ping(self) -> None:
        self.redis.ping()

    @translating
    def server_settings(self, *names: str) -> dict[str, str]:
        """Redis's own settings (CONFIG GET): StoreError when CONFIG is not allowed (a managed Redis)."""
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.config_get(name)
        return {str(key): str(value) for reply in pipe.execute() for key, value in reply.items()}

    @translating
    def lineage(self) -> Lineage | None:
        """The server's replication history (lease/replication.py); None when INFO is not allowed."""
        try:
            return Lineage.from_info(self.redis.info("replication"))
        except redis.ResponseError:
            return None

    @translating
    def has_epoch(self) -> bool:
        """Whether the pool's epoch is in Redis (none: nothing of the pool, or all of it lost)."""
        return bool(self.redis.hexists(self.keys.meta, "epoch"))

    @translating
    def tool_call_figures(self) -> Mapping[Any, Any]:
        """The gateways' tool-call figures as Redis has them ({} when the key is not a hash)."""
        try:
            raw: Mapping[Any, Any] = self.redis.hgetall(self.keys.tool_calls)
        except redis.ResponseError:
            return {}
        return raw

    def _hosts_with(self, key: Callable[[str], str], hosts: Sequence[str]) -> set[str]:
        """The hosts whose expiring per-host key exists now; one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for host in hosts:
            pipe.exists(key(host))
        return {host for host, alive in zip(hosts, pipe.execute(), strict=True) if alive}
