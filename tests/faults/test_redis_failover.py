"""Redis high availability, with real processes: a primary, a replica and a Sentinel.

The lease store follows Sentinel's primary (``redis.sentinels``, ``redis.service``); a grant is
returned only once a replica has it (``redis.wait_replicas``), so SIGKILLing the primary right
after a grant loses no grant and hands no container to two jobs. A failover that lost other
writes is noticed from Redis's replication lineage.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.connect import redis_client
from cinnamon_pool.errors import ReplicasMissing
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.replication import Lineage, lost_writes
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import Holder
from tests.lease_helpers import assert_one_lease_at_a_time, record
from tests.support import RedisHA, wait_until

pytestmark = pytest.mark.redis
POOL = "ha"


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[RedisHA]:
    servers = RedisHA(tmp_path / "ha")
    try:
        yield servers
    finally:
        servers.stop()


def config_for(ha: RedisHA, **redis_keys: object) -> PoolConfig:
    return PoolConfig.from_tables({"redis": {"url": "redis://ignored:1/0", "sentinels": ha.sentinels, "service": ha.SERVICE, **redis_keys}})


def store_on(config: PoolConfig) -> LeaseStore:
    settings = config.redis
    client = redis_client(settings, socket_timeout=2, socket_connect_timeout=1)
    return LeaseStore(client, POOL, wait_replicas=settings.replicas_to_wait, wait_timeout_ms=settings.wait_timeout_ms)


def test_a_grant_made_just_before_the_primary_dies_survives_the_failover_and_is_never_granted_twice(ha: RedisHA) -> None:
    config = config_for(ha)
    assert config.redis.replicas_to_wait == 1, "with sentinels, grants wait for one replica by default"
    store = store_on(config)
    for slot in (1, 2):
        store.register(record(slot))
    held = store.acquire(Holder("before-failover"), timeout_s=5)
    old, new = ha.kill_primary()  # SIGKILL right after the grant returned
    assert new != old

    store.renew(held.name, held.token)  # the lease is on the promoted primary: the grant was durable
    ha.restart(old)  # as an operator would: Sentinel makes it the new primary's replica, and grants can be acknowledged again
    wait_until(lambda: ha.replicas_in_sync(new) >= 1, 30, "the restarted server did not become a replica")
    other = store.acquire(Holder("after-failover"), timeout_s=10)
    assert other.name != held.name, "the held container was not granted again"
    assert store.release(held.name, held.token) in {"available", "handed"}
    assert store.release(other.name, other.token) in {"available", "handed"}
    assert_one_lease_at_a_time(redis.Redis(port=new), PoolKeys(POOL))


def test_without_a_replica_to_acknowledge_it_a_grant_is_given_back_and_the_acquire_says_why(ha: RedisHA) -> None:
    store = store_on(config_for(ha, wait_timeout_ms=100))
    store.register(record(1))
    replica = next(port for port in ha.servers if port != ha.primary_port())
    ha.servers[replica].send_signal(signal.SIGSTOP)  # the replica stops acknowledging
    try:
        with pytest.raises(ReplicasMissing, match=r"acknowledged by 0 of the 1 replicas redis.wait_replicas asks for"):
            store.acquire(Holder("no-replica"), timeout_s=1)
    finally:
        ha.servers[replica].send_signal(signal.SIGCONT)
    snapshot = store.snapshot()
    assert snapshot.leases == {} and snapshot.free == ["container-001"], "the grant was given back"
    assert store.acquire(Holder("replica-back"), timeout_s=5).name == "container-001"


def caught_up(primary: int, replica: int) -> bool:
    """The replica is past its first sync and has every write the primary made so far."""
    ours, theirs = redis.Redis(port=primary).info("replication"), redis.Redis(port=replica).info("replication")
    return theirs.get("master_link_status") == "up" and theirs.get("master_repl_offset") == ours.get("master_repl_offset")


def test_a_failover_that_lost_writes_is_noticed_and_one_that_lost_none_is_not(ha: RedisHA) -> None:
    store = store_on(config_for(ha))
    store.register(record(1))
    primary = ha.primary_port()
    assert primary is not None
    replica = next(port for port in ha.servers if port != primary)
    wait_until(lambda: caught_up(primary, replica), 10, "the replica did not catch up with the primary")
    seen = Lineage.from_info(redis.Redis(port=primary).info("replication"))
    assert seen is not None

    ha.servers[replica].send_signal(signal.SIGSTOP)
    redis.Redis(port=primary).client_kill_filter(_type="replica")  # cut off: it misses what comes now
    redis.Redis(port=primary).hset(PoolKeys(POOL).meta, "written", "while the replica was away")
    seen_after_write = Lineage.from_info(redis.Redis(port=primary).info("replication"))
    assert seen_after_write is not None and seen_after_write.offset > seen.offset
    ha.servers[primary].kill()
    ha.servers[primary].wait()
    ha.servers[replica].send_signal(signal.SIGCONT)
    wait_until(lambda: ha.primary_port() not in {None, primary}, 30, "Sentinel did not promote the replica")
    assert ha.primary_port() == replica
    now = Lineage.from_info(redis.Redis(port=replica).info("replication"))
    assert now is not None
    assert lost_writes(seen, now) is None, "everything seen before the replica stopped is on the new primary"
    why = lost_writes(seen_after_write, now)
    assert why is not None and "the promoted primary had the old history up to" in why, why
