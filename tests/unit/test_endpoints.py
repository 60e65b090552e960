"""A job sends its lease token only to a trusted gateway URL: a grant read from Redis (forged,
or pushed to a waiter's wake key) cannot point it anywhere else."""

from __future__ import annotations

import json

import pytest
import redis

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.endpoints import check_endpoint
from cinnamon_pool.errors import ConfigError, UntrustedEndpoint
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.pool import ContainerPool
from tests.lease_helpers import record, store_with


def config(**gateway: object) -> PoolConfig:
    # No canary: a release that drew one (10 % by default) would leave the second lease waiting.
    tables = {"pool": {"name": "unit"}, "rules": {"canary_share": 0.0}, "gateway": {"listen": "127.0.0.1:8930", **gateway}}
    return PoolConfig.from_tables(tables)


def test_by_default_only_the_files_own_gateway_is_trusted() -> None:
    own = config()
    assert check_endpoint(own, "http://127.0.0.1:8930/unit/container-001/mcp")
    for forged in (
        "http://127.0.0.1:8931/unit/container-001/mcp",  # another port
        "http://evil.example:8930/unit/container-001/mcp",
        "https://127.0.0.1:8930/unit/container-001/mcp",  # another scheme
        "http://127.0.0.1:3001/mcp",  # a container's own port, past the gateway
    ):
        with pytest.raises(UntrustedEndpoint, match="not under a trusted gateway URL") as refused:
            check_endpoint(own, forged)
        assert forged in str(refused.value) and "http://127.0.0.1:8930" in str(refused.value)


def test_a_pool_of_several_hosts_lists_them_and_plain_http_is_refused_away_from_loopback() -> None:
    hosts = config(trusted_urls=["https://gw-a.internal:8930", "http://10.1.2.3:8930/prefix"])
    assert check_endpoint(hosts, "https://gw-a.internal:8930/unit/container-001/mcp")
    with pytest.raises(UntrustedEndpoint, match="not under"):
        check_endpoint(hosts, "http://127.0.0.1:8930/unit/container-001/mcp")  # its own URL is no longer listed
    with pytest.raises(UntrustedEndpoint, match="plain http away from loopback"):
        check_endpoint(hosts, "http://10.1.2.3:8930/prefix/unit/container-1001/mcp")
    with pytest.raises(UntrustedEndpoint, match="no valid port"):
        check_endpoint(hosts, "https://gw-a.internal:8930.evil.example/unit/container-001/mcp")
    with pytest.raises(UntrustedEndpoint, match="not under"):
        check_endpoint(hosts, "https://gw-a.internal.evil.example:8930/unit/container-001/mcp")
    plain = config(trusted_urls=["http://10.1.2.3:8930/prefix"], allow_plain_http=True)
    assert check_endpoint(plain, "http://10.1.2.3:8930/prefix/unit/container-1001/mcp")
    with pytest.raises(UntrustedEndpoint, match="not under"):
        check_endpoint(plain, "http://10.1.2.3:8930/prefixed/unit/container-1001/mcp")


def test_direct_mode_trusts_only_the_containers_own_loopback_ports() -> None:
    direct = PoolConfig.from_tables({"pool": {"name": "unit"}, "gateway": {"listen": ""}, "container": {"host_port_range": "3000-3009"}})
    assert check_endpoint(direct, "http://127.0.0.1:3001/mcp")
    for forged in ("http://127.0.0.1:3010/mcp", "http://127.0.0.1:3001/other", "http://10.0.0.9:3001/mcp"):
        with pytest.raises(UntrustedEndpoint):
            check_endpoint(direct, forged)


def test_a_bad_trusted_url_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"gateway\.trusted_urls.*user:pw@"):
        config(trusted_urls=["http://user:pw@gw.example"])


@pytest.fixture(params=["fakeredis", pytest.param("redis-server", marks=pytest.mark.redis)])
def client(request: pytest.FixtureRequest) -> redis.Redis:
    return request.getfixturevalue("fake_redis" if request.param == "fakeredis" else "real_redis")  # type: ignore[no-any-return]


def test_a_forged_endpoint_in_redis_is_refused_and_the_grant_given_back(client: redis.Redis) -> None:
    store = store_with(client, 1)
    keys, name = PoolKeys("unit"), record(1).name
    stored = json.loads(client.hget(keys.containers, name) or b"{}")
    pool = ContainerPool(config(), client=client)
    client.hset(keys.containers, name, json.dumps({**stored, "endpoint": "http://127.0.0.1:8930/unit/container-001/mcp"}))
    with pool.lease("run-0", timeout_s=2) as lease:  # the file's own gateway: trusted
        assert lease.endpoint.startswith("http://127.0.0.1:8930/")
    client.hset(keys.containers, name, json.dumps({**stored, "endpoint": "http://attacker.example:80/mcp"}))
    with pytest.raises(UntrustedEndpoint, match=r"attacker\.example"), pool.lease("run-1", timeout_s=2):
        pytest.fail("the block must not run with a forged endpoint")
    assert store.snapshot().leases == {}, "the grant was given back"
