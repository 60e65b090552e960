"""The pool's back-off policies (tenacity strategies), and acquire's retry while Redis does not answer."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from cinnamon_pool import backoff
from cinnamon_pool.clock import ManualClock
from cinnamon_pool.errors import StoreUnavailable
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import Holder
from tests.lease_helpers import store_with


def test_each_policy_doubles_up_to_its_cap() -> None:
    assert [backoff.after(backoff.REDIS_UNREACHABLE, n) for n in range(1, 8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert [backoff.after(backoff.TICK_FAILED, n) for n in (1, 2, 3, 5, 6, 9)] == [1, 2, 4, 16, 30, 30]
    assert [backoff.after(backoff.DOCKER_EVENTS, n) for n in (1, 2, 5, 6)] == [0.5, 1, 8, 10]


class CountingClock(ManualClock):
    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        super().sleep(seconds)


def store_failing(times: int) -> tuple[LeaseStore, CountingClock, list[float]]:
    clock = CountingClock()
    store = store_with(fakeredis.FakeRedis(), 1, clock=clock)  # type: ignore[arg-type]
    run, failures = store._run, [times]

    def flaky(op, *args):  # type: ignore[no-untyped-def]
        if failures[0] > 0:
            failures[0] -= 1
            raise redis.ConnectionError("Redis is restarting")
        return run(op, *args)

    store._run = flaky  # type: ignore[method-assign]
    return store, clock, clock.sleeps


def test_acquire_retries_while_redis_does_not_answer_then_is_granted() -> None:
    store, _clock, sleeps = store_failing(4)
    assert store.acquire(Holder("run-1"), timeout_s=10).name
    assert sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8])


def test_acquire_gives_up_with_store_unavailable_when_the_next_pause_passes_its_deadline() -> None:
    store, _clock, sleeps = store_failing(100)
    with pytest.raises(StoreUnavailable) as raised:
        store.acquire(Holder("run-1"), timeout_s=2.0)
    assert isinstance(raised.value.__cause__, redis.ConnectionError), "redis-py's error stays attached as the cause"
    assert sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8]), "1.5 s slept; the next 1.6 s would pass the 2 s deadline"
