"""The gateway's door to Redis (asyncio): the reads that authorize a request, the MCP sessions of
each lease, the bindings of sessions on connect, the keeper and prepared sessions, its
announcement as this host's preparer and the tool-call figures. The lease operations are
:class:`~cinnamon_pool.lease.aio.AsyncLeaseClient`'s, made here over the same client.

Values come back as Redis holds them (bytes), for ``decode`` to read; every Redis error leaves
through ``redis_errors.py``, so the gateway never sees redis-py.
"""

from __future__ import annotations

from collections.abc import Mapping

import redis.asyncio as aioredis

from cinnamon_pool import decode
from cinnamon_pool.clock import SYSTEM_CLOCK, Clock
from cinnamon_pool.config.sections import Rules
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.aio import AsyncLeaseClient
from cinnamon_pool.lease.apikeys import by_name, live_sessions, look_up
from cinnamon_pool.lease.redis_errors import awaiting
from cinnamon_pool.lease.scripts import Op, Own, own, source
from cinnamon_pool.model import ApiKey, ConnectSession

Raw = Mapping[bytes, bytes]


class GatewayStore:
    """One pool's keys as one host's gateway (or its supervisor's keepers) reads and writes them."""

    def __init__(self, client: aioredis.Redis, pool: str, host: str) -> None:
        self.client, self.pool, self.host, self.keys = client, pool, host, PoolKeys(pool)
        self._offer = client.register_script(source(Op.PREPARED))
        self._forget_field = client.register_script(own(Own.COMPARE_AND_DELETE_FIELD))
        self._forget_key = client.register_script(own(Own.COMPARE_AND_DELETE))
        self._script_keys = self.keys.script_keys(host)

    def lease_client(self, rules: Rules, clock: Clock = SYSTEM_CLOCK) -> AsyncLeaseClient:
        return AsyncLeaseClient(
            self.client,
            self.pool,
            self.host,
            lease_ttl_s=rules.lease_ttl_s,
            max_lease_s=rules.max_lease_s,
            error_threshold=rules.error_threshold,
            clock=clock,
        )

    # -- authorizing ---------------------------------------------------------------------------
    async def record_and_lease(self, name: str) -> tuple[bytes | None, bytes | None, int]:
        """One round trip: the container's record, its lease and Redis' clock (ms)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(self.keys.containers, name)
        pipe.hget(self.keys.leases, name)
        pipe.time()
        record, lease, now = await awaiting(pipe.execute())
        return record, lease, decode.time_ms(now)

    async def last_release(self, name: str) -> tuple[bytes | None, bytes | None]:
        """The token the container's last release was made with, and its record (one transaction)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hget(self.keys.last_tokens, name)
        pipe.hget(self.keys.containers, name)
        last, record = await awaiting(pipe.execute())
        return last, record

    async def current_leases(self, names: list[str]) -> dict[str, str | None]:
        """The current, unexpired lease (its token's fingerprint) of each container; None: none
        that holds (or one unreadable)."""
        if not names:
            return {}
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.keys.leases, names)
        pipe.time()
        raw, now = await awaiting(pipe.execute())
        now_ms, current = decode.time_ms(now), dict[str, str | None]()
        for name, value in zip(names, raw, strict=True):
            try:
                lease = None if value is None else decode.lease(name, value)
            except decode.BadValue:
                lease = None
            current[name] = lease.token if lease is not None and now_ms < lease.expires_ms else None
        return current

    async def api_key(self, name: str) -> ApiKey | None:
        return await awaiting(by_name(self.client, self.keys, name))

    async def api_key_of(self, secret: str) -> ApiKey | None:
        """The API key whose secret is ``secret`` (None: unknown or revoked)."""
        return await awaiting(look_up(self.client, self.keys, secret))

    async def revoked(self, names: list[str]) -> set[str]:
        present = await awaiting(self.client.hmget(self.keys.api_key_names, names))
        return {name for name, value in zip(names, present, strict=True) if value is None}

    async def key_used(self, name: str, at_ms: int) -> None:
        await awaiting(self.client.hset(self.keys.api_key_used, name, at_ms))

    # -- the sessions of each lease (gateway/sessions.py) ----------------------------------------
    async def lease_sessions(self, name: str) -> bytes | None:
        return await self._hget(self.keys.lease_sessions, name)

    async def put_lease_sessions(self, name: str, value: str) -> None:
        await awaiting(self.client.hset(self.keys.lease_sessions, name, value))

    async def forget_lease_sessions(self, name: str, read: bytes) -> None:
        """Delete the container's entry only while it still holds ``read``."""
        await awaiting(self._forget_field(keys=[self.keys.lease_sessions], args=[name, read]))

    # -- sessions on connect (gateway/connect.py) -----------------------------------------------
    async def binding(self, session: str) -> bytes | None:
        return await self._hget(self.keys.connect_sessions, session)

    async def bind(self, session: str, value: str) -> None:
        await awaiting(self.client.hset(self.keys.connect_sessions, session, value))

    async def unbind(self, session: str) -> None:
        await awaiting(self.client.hdel(self.keys.connect_sessions, session))

    async def live_bindings(self) -> list[ConnectSession]:
        """The bindings whose lease still holds; those whose lease ended are forgotten (each only
        while it still holds what was read): a gateway that died with sessions open could not."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(self.keys.connect_sessions)
        pipe.hgetall(self.keys.leases)
        pipe.time()
        bindings, leases, now = await awaiting(pipe.execute())
        live, ended = live_sessions(bindings, leases, decode.time_ms(now))
        for field_name, value in ended:
            await awaiting(self._forget_field(keys=[self.keys.connect_sessions], args=[field_name, value]))
        return live

    # -- keeper and prepared sessions (gateway/prepare.py) --------------------------------------
    async def announce(self, identity: str, for_ms: int) -> None:
        """This host's preparer is ``identity`` for ``for_ms`` (releases wait for its offer)."""
        await awaiting(self.client.set(self.keys.preparer(self.host), identity, px=for_ms))

    async def unannounce(self, identity: str) -> None:
        await awaiting(self._forget_key(keys=[self.keys.preparer(self.host)], args=[identity]))

    async def records_and_sessions(self) -> tuple[Raw, Raw]:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.containers)
        pipe.hgetall(self.keys.sessions)
        records, sessions = await awaiting(pipe.execute())
        return records, sessions

    async def released_tokens(self, names: list[str]) -> dict[str, bytes | None]:
        """The token each container was last released with (what its preparation is for)."""
        if not names:
            return {}
        tokens: list[bytes | None] = await awaiting(self.client.hmget(self.keys.last_tokens, names))  # type: ignore[arg-type]
        return dict(zip(names, tokens, strict=True))

    async def put_session(self, field_name: str, value: str) -> None:
        await awaiting(self.client.hset(self.keys.sessions, field_name, value))

    async def forget_session(self, field_name: bytes, read: bytes) -> None:
        """Delete the held session only while it still holds ``read`` (another writer's is kept)."""
        await awaiting(self._forget_field(keys=[self.keys.sessions], args=[field_name, read]))

    async def take_session(self, field_name: str) -> bytes | None:
        """Read and delete in one transaction: whoever deletes it owns it, so it is handed out once."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hget(self.keys.sessions, field_name)
        pipe.hdel(self.keys.sessions, field_name)
        raw, deleted = await awaiting(pipe.execute())
        return raw if deleted else None

    async def offer(self, args: list[str]) -> None:
        """``prepared.lua``: the preparation's result for a container waiting for it."""
        await awaiting(self._offer(keys=self._script_keys, args=args))

    async def _hget(self, key: str, field_name: str) -> bytes | None:
        value = await awaiting(self.client.hget(key, field_name))
        return value.encode() if isinstance(value, str) else value  # (bytes: the client does not decode)

    # -- figures ---------------------------------------------------------------------------------
    async def publish_tool_calls(self, figures: Mapping[str, str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for container, value in figures.items():
            pipe.hset(self.keys.tool_calls, container, value)
        await awaiting(pipe.execute())
