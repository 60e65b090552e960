"""The pool on a real Redis Cluster (tests/redis_cluster.py: 3 primaries, 3 replicas): every key
in the pool's slot, the lease protocol through the clients every part uses (connect.py), a grant
that survives SIGKILL of the slot's primary, and the CLI on a ``redis+cluster://`` URL. The
whole stack through failovers is the soak's ``--redis-cluster`` mode (make test)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.connect import async_redis_client, redis_client
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.aio import AsyncLeaseClient
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import Grant, Holder
from tests.lease_helpers import assert_one_lease_at_a_time, record
from tests.redis_cluster import RedisClusterSet

pytestmark = pytest.mark.redis
POOL = "clustered"
BIN = Path(sys.executable).parent


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterSet]:
    nodes = RedisClusterSet(tmp_path / "cluster")
    try:
        yield nodes
    finally:
        nodes.stop()


def config_of(cluster: RedisClusterSet) -> PoolConfig:
    return PoolConfig.from_tables({"redis": {"url": cluster.url}, "pool": {"name": POOL}})


def store_on(config: PoolConfig) -> LeaseStore:
    client = redis_client(config.redis, pool=config.pool.name, socket_timeout=2, socket_connect_timeout=1)
    return LeaseStore(client, POOL, wait_replicas=config.redis.replicas_to_wait, wait_timeout_ms=config.redis.wait_timeout_ms)


def test_the_lease_protocol_runs_on_the_primary_of_the_pools_slot_with_every_key_in_that_slot(cluster: RedisClusterSet) -> None:
    config = config_of(cluster)
    assert config.redis.is_cluster and config.redis.replicas_to_wait == 1, "on a cluster, grants wait for one replica by default"
    store = store_on(config)
    for slot in (1, 2):
        store.register(record(slot))
    first, second = (store.acquire(Holder(f"holder-{n}"), timeout_s=5) for n in (1, 2))

    async def waiters_in_order() -> list[Grant]:
        client = async_redis_client(config.redis, pool=POOL, socket_timeout=5)
        leases = AsyncLeaseClient(client, POOL, "host-a", lease_ttl_s=30, max_lease_s=600, error_threshold=3)
        waiting = []
        for n in (1, 2):  # queued one after the other: FIFO
            waiting.append(asyncio.ensure_future(leases.acquire(Holder(f"waiter-{n}"), 10)))
            while store.snapshot().waiting < n:
                await asyncio.sleep(0.02)
        store.release(second.name, second.token)
        granted = [await waiting[0]]
        store.release(first.name, first.token)
        granted.append(await waiting[1])
        for grant in granted:
            await leases.release(grant.name, grant.token)
        await client.aclose()
        return granted

    granted = asyncio.run(waiters_in_order())
    assert [grant.name for grant in granted] == [second.name, first.name], "the first waiter got the first container given back"
    assert sorted(store.snapshot().free) == sorted([first.name, second.name])

    primary = redis.Redis(port=cluster.primary_of(PoolKeys(POOL).meta))
    slot = int(primary.execute_command("CLUSTER", "KEYSLOT", PoolKeys(POOL).meta))
    keys = list(primary.scan_iter(match=f"cinnamon:{{{POOL}}}:*"))
    assert len(keys) >= 6, keys
    assert int(primary.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) == len(keys), "every key of the pool is in its slot"
    assert_one_lease_at_a_time(primary, PoolKeys(POOL))


def test_a_grant_made_just_before_the_slots_primary_dies_survives_and_the_store_follows_the_new_primary(
    cluster: RedisClusterSet,
) -> None:
    store = store_on(config_of(cluster))
    for slot in (1, 2):
        store.register(record(slot))
    held = store.acquire(Holder("before-failover"), timeout_s=5)
    old, new = cluster.kill_primary_of(PoolKeys(POOL).meta)  # SIGKILL right after the grant returned
    assert new != old

    store.renew(held.name, held.token)  # the lease is on the promoted primary: the grant was durable
    cluster.restart(old)  # it rejoins as the new primary's replica: grants can be acknowledged again
    other = store.acquire(Holder("after-failover"), timeout_s=10)
    assert other.name != held.name, "the held container was not granted again"
    assert store.release(held.name, held.token) in {"available", "handed"}
    assert store.release(other.name, other.token) in {"available", "handed"}
    assert_one_lease_at_a_time(redis.Redis(port=new), PoolKeys(POOL))


def test_the_cli_works_on_a_cluster_url(cluster: RedisClusterSet, tmp_path: Path) -> None:
    config = tmp_path / "pool.toml"
    config.write_text(f'[redis]\nurl = "{cluster.url}"\n[pool]\nname = "{POOL}"\n[logs]\ndir = "{tmp_path / "logs"}"\n')
    env = {**os.environ, "CINNAMON_CONFIG": str(config)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "cinnamon-pool"), *args], env=env, capture_output=True, text=True, timeout=60)

    made = cli("keys", "create", "agent")
    assert made.returncode == 0, made.stderr
    listed = cli("keys", "list")
    assert listed.returncode == 0 and "agent" in listed.stdout, listed.stdout + listed.stderr
    primary = redis.Redis(port=cluster.primary_of(PoolKeys(POOL).meta))
    assert primary.hexists(PoolKeys(POOL).api_key_names, "agent"), "the key is in the pool's slot, on its primary"
    status = cli("status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["pool"] == POOL, status.stdout + status.stderr
    doctor = cli("doctor")
    slot = int(primary.execute_command("CLUSTER", "KEYSLOT", PoolKeys(POOL).meta))
    said = rf"^OK +redis: redis\+cluster://127\.0\.0\.1:\d+/0 answers \(the pool's slot {slot} on 127\.0\.0\.1:(\d+)\)$"
    found = re.search(said, doctor.stdout, re.M)
    assert found and int(found.group(1)) == cluster.primary_of(PoolKeys(POOL).meta), doctor.stdout
