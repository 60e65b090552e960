"""Sentinel and cluster clients keep what ``redis.url`` says besides its address: database,
credentials, TLS; a cluster client finds the primary of its pool's slot in ``CLUSTER SLOTS``."""

from __future__ import annotations

import pytest

from cinnamon_pool.config import RedisSettings
from cinnamon_pool.connect import SlotPrimary, async_redis_client, redis_client

SENTINELS = ("127.0.0.1:26379",)


@pytest.mark.parametrize("make", [redis_client, async_redis_client], ids=["sync", "async"])
def test_a_sentinel_client_keeps_tls_the_user_and_the_password_of_the_url(make) -> None:  # type: ignore[no-untyped-def]
    settings = RedisSettings(url="rediss://worker:s3cret@ignored:1/2", sentinels=SENTINELS, service="cinnamon")
    kwargs = make(settings).connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("worker", "s3cret", 2)
    assert "SSL" in make(settings).connection_pool.connection_class.__name__
    plain = make(RedisSettings(url="redis://:pw@ignored:1/0", sentinels=SENTINELS, service="cinnamon")).connection_pool
    assert "SSL" not in plain.connection_class.__name__
    assert plain.connection_kwargs["password"] == "pw"


@pytest.mark.parametrize("make", [redis_client, async_redis_client], ids=["sync", "async"])
def test_a_cluster_client_keeps_tls_the_user_and_the_password_and_needs_its_pool(make) -> None:  # type: ignore[no-untyped-def]
    settings = RedisSettings(url="rediss+cluster://worker:s3cret@10.0.0.5:7000")
    pool = make(settings, pool="p").connection_pool
    assert (pool.connection_kwargs["username"], pool.connection_kwargs["password"]) == ("worker", "s3cret")
    assert "SSL" in pool.connection_class.__name__
    with pytest.raises(ValueError, match="needs the pool"):
        make(settings)


def test_the_slots_primary_is_read_from_cluster_slots_and_every_node_named_there_is_kept() -> None:
    slots = SlotPrimary(RedisSettings(url="redis+cluster://10.0.0.5:7000"), slot=6000)
    ranges = [
        [0, 5460, [b"10.0.0.5", 7000, b"id1"], [b"10.0.0.6", 7003, b"id4"]],
        [5461, 10922, [b"", 7001, b"id2"], [b"10.0.0.7", 7004, b"id5"]],  # a node that does not know its own address
    ]
    assert slots.learn(("10.0.0.5", 7000), ranges) == ("10.0.0.5", 7001)
    assert slots.nodes == [("10.0.0.5", 7000), ("10.0.0.6", 7003), ("10.0.0.5", 7001), ("10.0.0.7", 7004)]
    assert slots.learn(("10.0.0.5", 7000), ranges[:1]) is None, "no range holds the slot: ask another node"
