"""Sentinel clients keep what ``redis.url`` says besides its address: database, credentials, TLS."""

from __future__ import annotations

import pytest

from cinnamon_pool.config import RedisSettings
from cinnamon_pool.connect import async_redis_client, redis_client

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
