"""The gateway's asyncio lease client against a real redis-server: waiters that give up leave
the queue, also when Redis refuses new connections for a while as they go."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import redis.asyncio as aioredis

from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.aio import AsyncLeaseClient
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import ContainerRecord, ContainerState, Holder

pytestmark = pytest.mark.redis

POOL, HOST = "aio", "h1"


def held_pool(real_redis: redis.Redis) -> LeaseStore:
    """A pool of one container, leased: every acquire waits."""
    store = LeaseStore(real_redis, POOL, lease_ttl_s=60)
    store.register(ContainerRecord("container-001", "a" * 64, 1, HOST, "http://127.0.0.1:1/mcp", ContainerState.STARTING))
    store.acquire(Holder("holder", "", "w"), timeout_s=1)
    return store


async def queued(store: LeaseStore, count: int) -> None:
    deadline = time.monotonic() + 5
    while store.snapshot().waiting < count:
        assert time.monotonic() < deadline, f"{store.snapshot().waiting} of {count} acquires queued"
        await asyncio.sleep(0.02)


def test_waiters_cancelled_while_redis_refuses_connections_leave_the_queue_when_it_takes_them_again(
    real_redis: redis.Redis, redis_server: str
) -> None:
    store = held_pool(real_redis)

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_server, socket_timeout=5)
        leases = AsyncLeaseClient(client, POOL, HOST, lease_ttl_s=60, max_lease_s=600, error_threshold=3)
        waiters = [asyncio.ensure_future(leases.acquire(Holder(f"waiter-{i}", "", "w"), 60)) for i in range(3)]
        await queued(store, 3)
        limit = str(real_redis.config_get("maxclients")["maxclients"])
        real_redis.config_set("maxclients", 1)  # this admin connection stays; new ones are refused
        try:
            for waiter in waiters:
                waiter.cancel()  # their blocking reads' connections close; leaving needs new ones
            await asyncio.sleep(0.5)
            assert store.snapshot().waiting == 3, "nobody could leave while Redis refused connections"
        finally:
            real_redis.config_set("maxclients", limit)
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(result, asyncio.CancelledError) for result in results), results
        await client.aclose()

    asyncio.run(scenario())
    assert store.snapshot().waiting == 0, "every waiter left the queue once Redis answered"
    assert not real_redis.exists(PoolKeys(POOL).tickets)


def test_the_asyncio_client_loads_its_scripts_again_when_the_servers_cache_was_flushed(real_redis: redis.Redis, redis_server: str) -> None:
    store = LeaseStore(real_redis, POOL)
    store.register(ContainerRecord("container-001", "a" * 64, 1, HOST, "http://127.0.0.1:1/mcp", ContainerState.STARTING))

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_server, socket_timeout=5)
        leases = AsyncLeaseClient(client, POOL, HOST, lease_ttl_s=60, max_lease_s=600, error_threshold=3)
        for _ in range(3):
            real_redis.script_flush()  # a Redis restart or an operator's SCRIPT FLUSH: EVALSHA gets NOSCRIPT
            grant = await leases.acquire(Holder("flushed", "", "w"), 5)
            real_redis.script_flush()
            await leases.renew(grant.name, grant.token)
            real_redis.script_flush()
            assert await leases.release(grant.name, grant.token) == "available"
        await client.aclose()

    asyncio.run(scenario())
    snapshot = store.snapshot()
    assert (snapshot.free, snapshot.leases) == (["container-001"], {}), "each lease ended, the container free again"
