"""Clients of the pool's Redis: the one server of ``redis.url``, the primary that Redis
Sentinel names for ``redis.service``, or the primary of a Redis Cluster that serves the pool's
hash slot, each followed across failovers.

redis-py's Sentinel pools ask the Sentinels again when the primary stops answering or turns
into a replica. A cluster pool is the same machinery with the cluster's own map in the place of
Sentinel: every key of a pool carries its ``{pool}`` hash tag (keys.py), so one primary holds
the whole pool, and the client asks the nodes (``CLUSTER SLOTS``) which one that is whenever a
connection is made. A node that no longer serves the slot answers ``MOVED``: the connection is
closed and the call fails as a connection error, so it is tried again on the new primary as
after a Sentinel failover. Pipelines, ``WAIT``, ``TIME`` and the scripts' derived keys work as on
one server, which redis-py's ``RedisCluster`` does not give (it refuses ``TIME`` in a pipeline and
sends ``WAIT`` to any node).

Every part of the pool gets its clients here, so a pool follows its primary everywhere: jobs,
the supervisor, the gateway, the CLI.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.asyncio.sentinel import SentinelManagedConnection as AsyncSentinelConnection
from redis.asyncio.sentinel import SentinelManagedSSLConnection as AsyncSentinelSSLConnection
from redis.connection import parse_url
from redis.crc import key_slot
from redis.exceptions import ClusterDownError, MovedError, TryAgainError
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from cinnamon_pool.config import RedisSettings, redact
from cinnamon_pool.errors import StoreUnavailable
from cinnamon_pool.keys import PoolKeys

Client = redis.Redis  # what redis_client makes: other modules name the type from here, not from redis-py
SENTINEL_TIMEOUT_S = 1.0  # a Sentinel that does not answer this soon is skipped for the next


def _credentials(settings: RedisSettings, *, asynchronous: bool = False) -> dict[str, Any]:
    """The database, credentials and TLS of ``redis.url`` (its host and port are the Sentinels'
    to say): a ``rediss://`` URL keeps TLS to the primary that Sentinel names."""
    parsed = parse_url(settings.url)
    found = {key: parsed[key] for key in ("db", "username", "password") if parsed.get(key) is not None}
    if settings.url.startswith("rediss://"):
        found["connection_class"] = AsyncSentinelSSLConnection if asynchronous else SentinelManagedSSLConnection
    return found


def redis_client(settings: RedisSettings, *, pool: str | None = None, **options: Any) -> redis.Redis:
    """A client of the pool's Redis; ``options`` as for ``redis.Redis`` (socket_timeout, ...).
    ``pool``: the pool whose keys it reaches (required with a cluster: its slot's primary)."""
    if settings.is_cluster:
        slots = SlotPrimary(settings, _slot(pool))
        connection = _SlotSSLConnection if slots.tls else _SlotConnection
        return redis.Redis.from_pool(
            SentinelConnectionPool(slots.service, slots, connection_class=connection, **slots.credentials, **options)
        )
    if not settings.sentinels:
        return redis.Redis.from_url(settings.url, **options)
    sentinel = Sentinel(settings.sentinel_addresses, socket_timeout=SENTINEL_TIMEOUT_S)  # type: ignore[no-untyped-call, unused-ignore]
    client: redis.Redis = sentinel.master_for(settings.service, redis_class=redis.Redis, **_credentials(settings), **options)  # type: ignore[no-untyped-call, unused-ignore]
    return client


def async_redis_client(settings: RedisSettings, *, pool: str | None = None, **options: Any) -> aioredis.Redis:
    """The asyncio twin of :func:`redis_client` (the gateway's)."""
    if settings.is_cluster:
        slots = SlotPrimary(settings, _slot(pool))
        connection = _AsyncSlotSSLConnection if slots.tls else _AsyncSlotConnection
        return aioredis.Redis.from_pool(
            AsyncSentinelPool(slots.service, AsyncSlotPrimary(slots), connection_class=connection, **slots.credentials, **options)
        )
    if not settings.sentinels:
        return aioredis.Redis.from_url(settings.url, **options)
    sentinel = AsyncSentinel(settings.sentinel_addresses, socket_timeout=SENTINEL_TIMEOUT_S)  # type: ignore[no-untyped-call, unused-ignore]
    client: aioredis.Redis = sentinel.master_for(
        settings.service, redis_class=aioredis.Redis, **_credentials(settings, asynchronous=True), **options
    )
    return client


def slot_primary(client: redis.Redis) -> str:
    """For a cluster client, where the pool lives now ("slot S on host:port"); "" for others."""
    pool = client.connection_pool
    slots = getattr(getattr(pool, "proxy", None), "sentinel_manager", None)
    if not isinstance(pool, SentinelConnectionPool) or not isinstance(slots, SlotPrimary):
        return ""
    host, port = pool.get_master_address()
    return f"slot {slots.slot} on {host}:{port}"


def describe(settings: RedisSettings) -> str:
    """How the pool finds its Redis, for messages: never with its password."""
    if settings.is_cluster:
        return f"the Redis Cluster of {redact(settings.url)}"
    if settings.sentinels:
        return f"the primary of {settings.service!r} per Sentinel {', '.join(settings.sentinels)}"
    return redact(settings.url)


def unavailable(error: BaseException, settings: RedisSettings) -> StoreUnavailable | None:
    """``error`` as the project's own when it says Redis cannot be reached (down, cut off,
    refusing the credentials), naming where without the password; else None. A
    :class:`StoreUnavailable` from ``lease/`` is said again with where (the lease store knows only
    its client)."""
    if isinstance(error, StoreUnavailable) and error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError)):
        detail = " ".join(str(error).split()) or type(error).__name__
        return StoreUnavailable(describe(settings), detail.replace(settings.url, describe(settings)))
    return None


# -- Redis Cluster: the primary of the pool's slot, in the place of Sentinel's -------------------
DISCOVERY_TIMEOUT_S = 1.0  # a node that does not say who serves the slot this soon is skipped


def _slot(pool: str | None) -> int:
    if pool is None:
        raise ValueError("a client of a Redis Cluster needs the pool whose slot it reaches (pool=...)")
    return key_slot(PoolKeys(pool).meta.encode())


class SlotPrimary:
    """Stands in for redis-py's ``Sentinel`` in its Sentinel-managed pools: ``discover_master``
    names the primary that serves ``slot``, as the cluster's nodes report it (``CLUSTER SLOTS``).
    The node of ``redis.url`` is asked first time; every node learned is kept and asked next."""

    def __init__(self, settings: RedisSettings, slot: int) -> None:
        parsed = parse_url(settings.node_url)
        self.slot, self.service = slot, f"cluster slot {slot}"
        self.tls = settings.node_url.startswith("rediss://")
        self.credentials = {key: parsed[key] for key in ("username", "password") if parsed.get(key) is not None}
        self.nodes: list[tuple[str, int]] = [(str(parsed.get("host") or "127.0.0.1"), int(parsed.get("port") or 6379))]

    def ask(self, node: tuple[str, int]) -> tuple[str, int] | None:
        client = redis.Redis(
            host=node[0], port=node[1], ssl=self.tls, socket_timeout=DISCOVERY_TIMEOUT_S,
            socket_connect_timeout=DISCOVERY_TIMEOUT_S, **self.credentials,
        )  # fmt: skip
        try:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        finally:
            client.close()
        return self.learn(node, ranges)

    def learn(self, asked: tuple[str, int], ranges: Any) -> tuple[str, int] | None:
        """The primary of the slot in ``ranges`` (a ``CLUSTER SLOTS`` reply), keeping its nodes."""
        found = None
        for start, end, *nodes in ranges:
            addresses = [_address(node, asked) for node in nodes]  # the primary first, then its replicas
            self.nodes += [address for address in addresses if address not in self.nodes]
            if int(start) <= self.slot <= int(end):
                found = addresses[0]
        return found

    def discover_master(self, _service: str) -> tuple[str, int]:
        problems = []
        for node in list(self.nodes):
            try:
                found = self.ask(node)
            except redis.RedisError as error:
                problems.append(f"{node[0]}:{node[1]}: {error}")
                continue
            if found is not None:
                return found
            problems.append(f"{node[0]}:{node[1]}: serves no slot {self.slot}")
        raise MasterNotFoundError(f"no node of the cluster names the primary of slot {self.slot} ({'; '.join(problems)})")

    def discover_slaves(self, _service: str) -> list[tuple[str, int]]:
        return []


def _address(node: Any, asked: tuple[str, int]) -> tuple[str, int]:
    """A node's (host, port) in a ``CLUSTER SLOTS`` entry; a node that does not know its own
    address reports "": it is the one that was asked."""
    host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
    return host or asked[0], int(node[1])


class AsyncSlotPrimary:
    """:class:`SlotPrimary` for redis-py's asyncio Sentinel pools (each question is one short
    blocking call at connect time, in a thread so the event loop goes on)."""

    def __init__(self, slots: SlotPrimary) -> None:
        self.slots = slots

    async def discover_master(self, service: str) -> tuple[str, int]:
        return await asyncio.to_thread(self.slots.discover_master, service)

    async def discover_slaves(self, _service: str) -> list[tuple[str, int]]:
        return []


_MOVED = (MovedError, ClusterDownError, TryAgainError)


def _moved(error: BaseException) -> redis.ConnectionError:
    return redis.ConnectionError(f"the pool's slot is not served here now ({type(error).__name__}: {error})")


class _SlotConnection(SentinelManagedConnection):
    """A connection to the slot's primary; a ``MOVED`` (the node no longer serves the slot) or
    ``CLUSTERDOWN`` closes it and fails as a connection error, so the next try asks again."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except _MOVED as error:
            self.disconnect()  # type: ignore[no-untyped-call]
            raise _moved(error) from error


class _SlotSSLConnection(_SlotConnection, redis.SSLConnection):
    pass


class _AsyncSlotConnection(AsyncSentinelConnection):
    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except _MOVED as error:
            await self.disconnect()
            raise _moved(error) from error


class _AsyncSlotSSLConnection(_AsyncSlotConnection, aioredis.SSLConnection):
    pass
