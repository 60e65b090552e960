"""Redis errors leave lease/ as the project's own (lease/redis_errors.py): StoreUnavailable when
Redis does not answer, StoreError when it refuses a command, redis-py's error as the cause."""

from __future__ import annotations

import asyncio

import fakeredis
import fakeredis.aioredis
import pytest
import redis

from cinnamon_pool.errors import CinnamonError, StoreError, StoreUnavailable
from cinnamon_pool.lease.gatewayside import GatewayStore
from cinnamon_pool.lease.store import LeaseStore


def test_the_sync_store_raises_store_unavailable_while_redis_does_not_answer_even_from_a_generator() -> None:
    server = fakeredis.FakeServer()
    store = LeaseStore(fakeredis.FakeRedis(server=server), "qa")
    server.connected = False
    with pytest.raises(StoreUnavailable) as raised:
        store.snapshot()
    assert isinstance(raised.value.__cause__, redis.ConnectionError)
    assert isinstance(raised.value, CinnamonError), "under the one root"
    with pytest.raises(StoreUnavailable):
        list(store.recent_events(0, 10))  # a generator: the error comes while it is read


def test_a_refused_command_is_a_store_error_not_an_outage() -> None:
    client = fakeredis.FakeRedis()
    store = LeaseStore(client, "qa")
    client.set(store.keys.meta, "not a hash")  # a key of the wrong type
    with pytest.raises(StoreError) as raised:
        store.has_epoch()
    assert not isinstance(raised.value, StoreUnavailable)
    assert "WRONGTYPE" in str(raised.value) and isinstance(raised.value.__cause__, redis.ResponseError)


def test_the_gateways_store_raises_store_unavailable_while_redis_does_not_answer() -> None:
    async def scenario() -> None:
        server = fakeredis.FakeServer()
        store = GatewayStore(fakeredis.aioredis.FakeRedis(server=server), "qa", "h")
        assert await store.binding("session-1") is None
        server.connected = False
        with pytest.raises(StoreUnavailable):
            await store.record_and_lease("container-001")
        with pytest.raises(StoreUnavailable):
            await store.live_bindings()

    asyncio.run(scenario())
