"""Clients of the pool's Redis: the one server of ``redis.url``, or the primary that Redis
Sentinel names for ``redis.service``, followed across failovers (redis-py's Sentinel pools ask
the Sentinels again when the primary stops answering or turns into a replica).

Every part of the pool gets its clients here, so a pool configured with sentinels follows the
primary everywhere: jobs, the supervisor, the gateway, the CLI.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelManagedSSLConnection as AsyncSentinelSSLConnection
from redis.connection import parse_url
from redis.sentinel import Sentinel, SentinelManagedSSLConnection

from cinnamon_pool.config import RedisSettings, redact
from cinnamon_pool.errors import StoreUnavailable

SENTINEL_TIMEOUT_S = 1.0  # a Sentinel that does not answer this soon is skipped for the next


def _credentials(settings: RedisSettings, *, asynchronous: bool = False) -> dict[str, Any]:
    """The database, credentials and TLS of ``redis.url`` (its host and port are the Sentinels'
    to say): a ``rediss://`` URL keeps TLS to the primary that Sentinel names."""
    parsed = parse_url(settings.url)
    found = {key: parsed[key] for key in ("db", "username", "password") if parsed.get(key) is not None}
    if settings.url.startswith("rediss://"):
        found["connection_class"] = AsyncSentinelSSLConnection if asynchronous else SentinelManagedSSLConnection
    return found


def redis_client(settings: RedisSettings, **options: Any) -> redis.Redis:
    """A client of the pool's Redis; ``options`` as for ``redis.Redis`` (socket_timeout, ...)."""
    if not settings.sentinels:
        return redis.Redis.from_url(settings.url, **options)
    sentinel = Sentinel(settings.sentinel_addresses, socket_timeout=SENTINEL_TIMEOUT_S)  # type: ignore[no-untyped-call, unused-ignore]
    client: redis.Redis = sentinel.master_for(settings.service, redis_class=redis.Redis, **_credentials(settings), **options)  # type: ignore[no-untyped-call, unused-ignore]
    return client


def async_redis_client(settings: RedisSettings, **options: Any) -> aioredis.Redis:
    """The asyncio twin of :func:`redis_client` (the gateway's)."""
    if not settings.sentinels:
        return aioredis.Redis.from_url(settings.url, **options)
    sentinel = AsyncSentinel(settings.sentinel_addresses, socket_timeout=SENTINEL_TIMEOUT_S)  # type: ignore[no-untyped-call, unused-ignore]
    client: aioredis.Redis = sentinel.master_for(
        settings.service, redis_class=aioredis.Redis, **_credentials(settings, asynchronous=True), **options
    )
    return client


def describe(settings: RedisSettings) -> str:
    """How the pool finds its Redis, for messages: never with its password."""
    if settings.sentinels:
        return f"the primary of {settings.service!r} per Sentinel {', '.join(settings.sentinels)}"
    return redact(settings.url)


def unavailable(error: BaseException, settings: RedisSettings) -> StoreUnavailable | None:
    """``error`` as the project's own when it says Redis cannot be reached (down, cut off,
    refusing the credentials), naming where without the password; else None."""
    if isinstance(error, (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError)):
        detail = " ".join(str(error).split()) or type(error).__name__
        return StoreUnavailable(describe(settings), detail.replace(settings.url, describe(settings)))
    return None
