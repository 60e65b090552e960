"""The lease protocol under concurrency, against a real redis-server.

Client threads, each with its own connection, act at once on a pool of 3 containers, chosen at
random (seeded) each step: acquire (waiting, or not), renew, release, abandon a lease as a killed
job would (it expires), wait past the TTL, and replay an old token. A reaper thread does the
supervisor's part: it ends expired leases and recycles those containers. A monitor thread reads
the pool in one MULTI/EXEC every few ms. What must hold:

- a renew or release of a lease the client surely still holds succeeds; one with a stale token
  (released, or abandoned and expired) is refused, every time, and the test counts the refusals;
- the number of containers is conserved: every snapshot shows all of them, each in exactly one
  state, the free set and the leases agreeing with the states;
- liveness: every waiting acquire returns, granted or timed out, within its timeout and a second;
  at the end no waiter is left and every container can be granted again;
- no two leases on one container overlap (the event stream: grant and end alternate).

``CINNAMON_CONCURRENT_STEPS`` sets the number of steps (default 6000; `make soak` runs more).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import redis

from cinnamon_pool.errors import LeaseLost, LeaseNotOwned, PoolExhausted
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import ContainerState, Grant, Holder
from tests.lease_helpers import assert_one_lease_at_a_time, record

pytestmark = pytest.mark.redis

POOL = "concurrent"
CONTAINERS, CLIENTS = 3, 6
TTL_S, CAP_S, WAITER_TTL_S = 0.3, 3.0, 0.3
SURELY_HELD_S = TTL_S / 3  # renewed or granted this recently (client clock): the lease is surely alive
SURELY_STALE_S = TTL_S * 2  # abandoned this long ago: surely expired (Redis and client clocks tick alike)
ACQUIRE_TIMEOUT_S = 0.25
STEPS = int(os.environ.get("CINNAMON_CONCURRENT_STEPS", "6000"))
REFUSED = (LeaseLost, LeaseNotOwned)


@dataclass
class Tally:
    steps: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, action: str) -> None:
        with self.lock:
            self.steps[action] += 1

    def fail(self, message: str) -> None:
        with self.lock:
            self.failures.append(message)


class Client(threading.Thread):
    def __init__(self, index: int, url: str, steps: int, seed: int, tally: Tally) -> None:
        super().__init__(name=f"client-{index}", daemon=True)
        self.store = LeaseStore(redis.Redis.from_url(url), POOL, lease_ttl_s=TTL_S, max_lease_s=CAP_S, waiter_ttl_s=WAITER_TTL_S)
        self.random, self.steps, self.tally = random.Random(seed), steps, tally
        self.held: Grant | None = None
        self.alive_at = 0.0  # client monotonic time of the last grant or successful renew
        self.stale: list[tuple[str, str]] = []  # (container, token): released by us, refused from now on
        self.abandoned: list[tuple[str, str, float]] = []  # dropped without release, and when

    def run(self) -> None:
        try:
            for _ in range(self.steps):
                self.step()
            if self.held is not None:
                self.release()
        except Exception as error:  # any other error is a defect: reported, not swallowed
            self.tally.fail(f"{self.name}: {type(error).__name__}: {error}")

    def step(self) -> None:
        now = time.monotonic()
        self.stale += [(name, token) for name, token, at in self.abandoned if now - at > SURELY_STALE_S]
        self.abandoned = [entry for entry in self.abandoned if now - entry[2] <= SURELY_STALE_S]
        if self.held is None:
            action = self.random.choices(["acquire", "try_acquire", "replay"], [6, 2, 2 if self.stale else 0])[0]
        else:
            action = self.random.choices(["renew", "release", "abandon", "oversleep", "replay"], [5, 4, 0.2, 0.2, 2 if self.stale else 0])[
                0
            ]
        getattr(self, action)()
        self.tally.count(action)

    # -- actions -------------------------------------------------------------------------------
    def acquire(self, wait: bool = True) -> None:
        started = time.monotonic()
        try:
            self.held = self.store.acquire(Holder(self.name), timeout_s=ACQUIRE_TIMEOUT_S, wait=wait)
            self.alive_at = time.monotonic()
        except PoolExhausted:
            self.tally.count("timed_out" if wait else "exhausted")
        took = time.monotonic() - started
        if took > ACQUIRE_TIMEOUT_S + 1.0:
            self.tally.fail(f"{self.name}: an acquire took {took:.2f} s (timeout {ACQUIRE_TIMEOUT_S} s): a waiter was not served")
        if self.held is not None:
            time.sleep(self.random.uniform(0, 0.01))  # the job's work

    def try_acquire(self) -> None:
        self.acquire(wait=False)

    def renew(self) -> None:
        assert self.held is not None
        surely = time.monotonic() - self.alive_at < SURELY_HELD_S
        try:
            self.store.renew(self.held.name, self.held.token)
            self.alive_at = time.monotonic()
        except REFUSED as refusal:
            if surely:
                self.tally.fail(f"{self.name}: renew of a live lease on {self.held.name} refused: {refusal}")
            self.held = None

    def release(self) -> None:
        assert self.held is not None
        surely = time.monotonic() - self.alive_at < SURELY_HELD_S
        grant, self.held = self.held, None
        try:
            where = self.store.release(grant.name, grant.token)
        except REFUSED as refusal:
            if surely:
                self.tally.fail(f"{self.name}: release of a live lease on {grant.name} refused: {refusal}")
            return
        if where not in {"available", "handed"}:
            self.tally.fail(f"{self.name}: a release sent {grant.name} to {where!r}")
        self.stale.append((grant.name, grant.token))

    def abandon(self) -> None:
        """A killed job: the lease is never renewed nor released; it expires."""
        assert self.held is not None
        self.abandoned.append((self.held.name, self.held.token, self.alive_at))
        self.held = None

    def oversleep(self) -> None:
        """A job stalled past its TTL: its next renew may fail (it must not crash)."""
        time.sleep(TTL_S * self.random.uniform(0.5, 1.5))

    def replay(self) -> None:
        name, token = self.random.choice(self.stale)
        operation = self.random.choice(["renew", "release"])
        try:
            if operation == "renew":
                self.store.renew(name, token)
            elif self.store.release(name, token) == "noop":  # a release retried after it succeeded: changes nothing
                self.tally.count("stale_release_refused")
                return
        except REFUSED:
            self.tally.count(f"stale_{operation}_refused")
            return
        self.tally.fail(f"{self.name}: a {operation} with the stale token {token} on {name} was accepted")


class Reaper(threading.Thread):
    """The supervisor's part: end expired leases, and bring recycled containers back."""

    def __init__(self, url: str, stop: threading.Event, tally: Tally) -> None:
        super().__init__(name="reaper", daemon=True)
        self.store = LeaseStore(redis.Redis.from_url(url), POOL, lease_ttl_s=TTL_S, max_lease_s=CAP_S, waiter_ttl_s=WAITER_TTL_S)
        self.stop, self.tally = stop, tally

    def run(self) -> None:
        try:
            while not self.stop.wait(0.02):
                self.store.reap()
                for name, container in self.store.snapshot().containers.items():
                    if container.state is ContainerState.RESTARTING:
                        self.store.register(record(container.slot))
                        self.tally.count(f"recycled {name}")
        except Exception as error:
            self.tally.fail(f"reaper: {type(error).__name__}: {error}")


class Monitor(threading.Thread):
    """Conservation: every snapshot (one MULTI/EXEC) has every container, each in one state."""

    def __init__(self, url: str, stop: threading.Event, tally: Tally) -> None:
        super().__init__(name="monitor", daemon=True)
        self.store = LeaseStore(redis.Redis.from_url(url), POOL)
        self.stop, self.tally, self.snapshots = stop, tally, 0

    def run(self) -> None:
        expected = {f"container-{slot:03d}" for slot in range(1, CONTAINERS + 1)}
        while not self.stop.wait(0.005):
            snapshot = self.store.snapshot()
            self.snapshots += 1
            problems = []
            if set(snapshot.containers) != expected:
                problems.append(f"containers {sorted(snapshot.containers)}")
            for name, container in snapshot.containers.items():
                if (container.state is ContainerState.AVAILABLE) != (name in snapshot.free):
                    problems.append(f"{name} is {container.state.value}, in the free set: {name in snapshot.free}")
                leased = container.state in {ContainerState.ALLOCATED, ContainerState.DRAINING}
                if leased != (name in snapshot.leases):
                    problems.append(f"{name} is {container.state.value}, leased: {name in snapshot.leases}")
            if problems:
                self.tally.fail(f"monitor: {'; '.join(problems)}")
                return


def test_concurrent_clients_keep_the_protocol(real_redis: redis.Redis, redis_server: str) -> None:
    store = LeaseStore(real_redis, POOL, lease_ttl_s=TTL_S, max_lease_s=CAP_S, waiter_ttl_s=WAITER_TTL_S)
    for slot in range(1, CONTAINERS + 1):
        store.register(record(slot))
    tally, stop = Tally(), threading.Event()
    seed = random.randrange(1 << 30)
    clients = [Client(index, redis_server, STEPS // CLIENTS, seed + index, tally) for index in range(CLIENTS)]
    helpers = [Reaper(redis_server, stop, tally), Monitor(redis_server, stop, tally)]
    for thread in [*helpers, *clients]:
        thread.start()
    for client in clients:
        client.join(timeout=300)
        assert not client.is_alive(), f"{client.name} is stuck (seed {seed})"
    time.sleep(SURELY_STALE_S)  # abandoned leases expire and are reaped, dead tickets purged
    stop.set()
    for helper in helpers:
        helper.join(timeout=10)

    print(f"seed {seed}: {dict(tally.steps.most_common())}")
    assert tally.failures == [], f"seed {seed}: {tally.failures[:10]}"
    steps = sum(tally.steps[action] for action in ("acquire", "try_acquire", "renew", "release", "abandon", "oversleep", "replay"))
    assert steps >= STEPS - CLIENTS, tally.steps
    assert tally.steps["stale_renew_refused"] + tally.steps["stale_release_refused"] == tally.steps["replay"] > 0
    assert tally.steps["timed_out"] > 0 and tally.steps["abandon"] > 0, f"the run had no contention or no abandoned lease: {tally.steps}"
    assert helpers[1].snapshots > 100, "the monitor looked at the pool while the clients acted"  # type: ignore[attr-defined]

    store.reap()
    snapshot = store.snapshot()
    assert snapshot.waiting == 0, "a waiter's ticket was left behind"
    assert_one_lease_at_a_time(real_redis, PoolKeys(POOL))
    for container in snapshot.containers.values():  # every container comes back and can be granted
        if container.state is ContainerState.RESTARTING:
            store.register(record(container.slot))
    grants = [store.acquire(Holder("final"), timeout_s=2) for _ in range(CONTAINERS)]
    assert sorted(grant.name for grant in grants) == sorted(snapshot.containers)
