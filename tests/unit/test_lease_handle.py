"""Self-fencing and the heartbeat; hostile inputs never reach Redis."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from cinnamon_pool.clock import ManualClock
from cinnamon_pool.errors import InvalidIdentifier, LeaseLost
from cinnamon_pool.lease.handle import ContainerLease
from cinnamon_pool.lease.heartbeat import Heartbeat
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import Holder
from tests.lease_helpers import store_with


def lease(clock: ManualClock, fence_after_s: float = 20.0) -> ContainerLease:
    return ContainerLease(
        "http://127.0.0.1:3001/mcp",
        "a" * 64,
        "container-001",
        "0" * 16 + ":1:" + "0" * 16,
        "run",
        "p",
        fence_after_s=fence_after_s,
        clock=clock,
    )


def test_a_holder_fences_itself_when_renewals_stop() -> None:
    clock = ManualClock()
    held = lease(clock)
    held.check()
    clock.advance(19.9)
    held.check()
    clock.advance(0.2)
    with pytest.raises(LeaseLost, match=r"no successful renewal for 20\.1 s"):
        held.check()
    held.mark_renewed()
    held.check()


def test_a_lost_lease_stays_lost() -> None:
    held = lease(ManualClock())
    held.mark_lost("renewal refused")
    held.mark_renewed()
    with pytest.raises(LeaseLost, match="renewal refused"):
        held.check()


@pytest.mark.parametrize("name", ["", "../container-001", "container-001\n", "*", "container-1" + "0" * 9999])
def test_hostile_names_are_rejected_before_any_key_exists(fake_redis: redis.Redis, name: str) -> None:
    store = LeaseStore(fake_redis, "p")
    token = "0" * 16 + ":1:" + "0" * 16
    for operation in (lambda: store.renew(name, token), lambda: store.release(name, token), lambda: store.deregister(name, "x")):
        with pytest.raises(InvalidIdentifier):
            operation()
    with pytest.raises(InvalidIdentifier):
        store.renew("container-001", token + "\x00")
    with pytest.raises(InvalidIdentifier):
        store.acquire(Holder("run\n2"))
    assert fake_redis.keys("*") == []


@pytest.mark.redis
def test_the_heartbeat_keeps_a_lease_past_its_ttl_and_stopping_it_lets_it_expire(real_redis: redis.Redis) -> None:
    store = store_with(real_redis, 1, lease_ttl_s=0.3)
    grant = store.acquire(Holder("run"), timeout_s=0, wait=False)
    held = ContainerLease.from_grant("unit", grant, fence_after_s=0.2)
    with Heartbeat(store, held) as heartbeat:
        time.sleep(1.0)
        held.check()
        assert heartbeat.renewals >= 5
    time.sleep(0.4)
    assert store.reap() == [grant.name]


@pytest.mark.redis
def test_waiters_block_without_polling_and_are_served_in_order(real_redis: redis.Redis) -> None:
    store = store_with(real_redis, 1, waiter_ttl_s=60)  # a waiter's own timer fires only every 20 s
    first = store.acquire(Holder("holder"), timeout_s=0, wait=False)
    served: list[tuple[str, float]] = []

    def wait(run: str) -> None:
        grant = store.acquire(Holder(run), timeout_s=10)
        served.append((run, time.monotonic()))
        time.sleep(0.05)
        store.release(grant.name, grant.token)

    threads = []
    for run in ("w1", "w2", "w3"):
        threads.append(threading.Thread(target=wait, args=(run,)))
        threads[-1].start()
        deadline = time.monotonic() + 5
        while store.snapshot().waiting < len(threads):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    released_at = time.monotonic()
    store.release(first.name, first.token)
    for thread in threads:
        thread.join(timeout=10)
    assert [run for run, _ in served] == ["w1", "w2", "w3"]
    assert served[0][1] - released_at < 5, "the oldest waiter must be woken by the release, not by its 20 s timer"
