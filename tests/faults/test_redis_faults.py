"""Redis faults through the TCP fault proxy: an unreachable Redis fences holders, the pool comes
back by itself, and nothing is granted twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cinnamon_pool.errors import LeaseLost, LeaseNotOwned, StoreUnavailable
from cinnamon_pool.lease.handle import ContainerLease
from cinnamon_pool.lease.heartbeat import Heartbeat
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import Holder
from tests.faults.proxy import Fault, FaultProxy
from tests.lease_helpers import record, store_with

pytestmark = pytest.mark.redis
TTL_S = 1.2


@pytest.fixture
def proxy(real_redis: redis.Redis) -> Iterator[FaultProxy]:
    port = int(real_redis.connection_pool.connection_kwargs["port"])
    fault_proxy = FaultProxy(port)
    yield fault_proxy
    fault_proxy.close()


def through(proxy: FaultProxy) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=0.3, socket_connect_timeout=0.3)


@pytest.mark.parametrize("fault", [Fault.BLACKHOLE, Fault.DOWN, Fault.RESET])
def test_a_holder_cut_off_from_redis_fences_itself_and_the_pool_recovers(real_redis: redis.Redis, proxy: FaultProxy, fault: Fault) -> None:
    direct = store_with(real_redis, 1, pool="faults", lease_ttl_s=TTL_S)
    holder_store = LeaseStore(through(proxy), "faults", lease_ttl_s=TTL_S)
    grant = holder_store.acquire(Holder("cut-off"), timeout_s=2)
    lease = ContainerLease.from_grant("faults", grant, fence_after_s=TTL_S * 2 / 3)
    with Heartbeat(holder_store, lease):
        time.sleep(TTL_S)
        lease.check()  # renewals through the proxy kept it alive
        proxy.set(fault)
        deadline = time.monotonic() + TTL_S * 3
        while lease.valid:
            assert time.monotonic() < deadline, "the holder did not fence itself while Redis was unreachable"
            time.sleep(0.05)
        with pytest.raises(LeaseLost):
            lease.check()
        time.sleep(TTL_S * 0.6)  # past the lease's own expiry on the server
        assert direct.reap() == [grant.name], "the lease expired on the server"
        proxy.set(Fault.NONE)
    direct.register(record(1))  # the supervisor's recycle
    second = direct.acquire(Holder("next"), timeout_s=1)
    assert second.token != grant.token
    with pytest.raises(LeaseNotOwned):
        holder_store.renew(grant.name, grant.token)  # the cut-off holder cannot come back


def test_latency_slows_but_does_not_break_the_protocol(real_redis: redis.Redis, proxy: FaultProxy) -> None:
    store_with(real_redis, 2, pool="slow")
    slow = LeaseStore(redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=5), "slow")
    proxy.set(Fault.LATENCY, latency_s=0.05)
    grants = []
    threads = [threading.Thread(target=lambda: grants.append(slow.acquire(Holder("slow"), timeout_s=10))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(g.name for g in grants) == ["container-001", "container-002"], "two grants, two containers"
    for grant in grants:
        assert slow.release(grant.name, grant.token) == "available"


def test_an_acquire_rides_out_a_redis_outage_shorter_than_its_timeout(real_redis: redis.Redis, proxy: FaultProxy) -> None:
    store_with(real_redis, 1, pool="outage")
    # No retries inside redis-py (its default adds up to ~3 s per call): the store's own back-off is measured.
    client = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=0.3, socket_connect_timeout=0.3, retry=Retry(NoBackoff(), 0))
    waiting = LeaseStore(client, "outage")
    proxy.set(Fault.DOWN)
    threading.Timer(1.5, proxy.set, args=(Fault.NONE,)).start()
    started = time.monotonic()
    grant = waiting.acquire(Holder("patient"), timeout_s=10)
    assert time.monotonic() - started >= 1.4, "it was granted only once Redis answered again"
    assert waiting.release(grant.name, grant.token) == "available"
    proxy.set(Fault.DOWN)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        waiting.acquire(Holder("impatient"), timeout_s=1)
    assert time.monotonic() - started < 3, "past its timeout the store's StoreUnavailable propagates"
    assert isinstance(raised.value.__cause__, redis.ConnectionError)
