"""The lease protocol as a Hypothesis state machine against a real redis-server.

TTLs are scaled down (lease 0.4 s, hard cap 1.2 s, waiter ticket 0.5 s) so "let time pass"
is a short sleep. After every step the invariants of DESIGN.md are checked on Redis itself:
  1. no two leases on one container overlap (from the event stream: grant and end alternate);
  2. only the current token acts; a rejected operation leaves the keys byte-identical;
  3. every registered container is in exactly one state and the free set has no duplicates;
  4. no lease lives past the hard cap (server time);
  5. live waiters are granted in ticket order.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import cast

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, rule

from cinnamon_pool.errors import LeaseLost, LeaseNotOwned, PoolExhausted
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.scripts import Op
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import ContainerState, Grant, Holder, Outcome
from cinnamon_pool.tokens import claim, secret_digest
from tests.lease_helpers import assert_one_lease_at_a_time, dump_state, record
from tests.support import stream_entries

pytestmark = pytest.mark.redis

POOL = "sm"
WAITER_SECRET = "5ec2e7" + "0" * 10  # the secret of the waiters the machine queues through the script itself
TTL_S, CAP_S, WAITER_TTL_S = 0.2, 0.6, 0.25
CONTAINERS = 2


@dataclass
class Waiter:
    ticket: str
    seq: int
    refreshed_at: float  # client monotonic time of the last acquire call for this ticket


class LeaseMachine(RuleBasedStateMachine):
    leases = Bundle("leases")
    released = Bundle("released")

    def __init__(self) -> None:
        super().__init__()
        self.client: redis.Redis = SERVER["client"]
        self.client.flushall()
        self.store = LeaseStore(self.client, POOL, lease_ttl_s=TTL_S, max_lease_s=CAP_S, error_threshold=3, waiter_ttl_s=WAITER_TTL_S)
        self.keys = PoolKeys(POOL)
        self.waiters: list[Waiter] = []
        self.seq = 0
        self.epoch_start = "0-0"  # stream entries before this id belong to a wiped epoch

    @initialize()
    def register_containers(self) -> None:
        for slot in range(1, CONTAINERS + 1):
            self.store.register(record(slot))

    # -- rules ---------------------------------------------------------------------------
    @rule(target=leases)
    def acquire(self) -> Grant | object:
        try:
            return self.store.acquire(Holder(f"run-{secrets.token_hex(3)}"), timeout_s=0, wait=False)
        except PoolExhausted:
            return _NOTHING

    @rule()
    def enqueue_waiter(self) -> None:
        ticket = secrets.token_hex(16)
        reply = self._acquire_script(ticket)
        if reply[0] == "WAIT":
            self.seq += 1
            self.waiters.append(Waiter(ticket, self.seq, time.monotonic()))
        elif reply[0] == "GRANTED":
            self.store.release(json.loads(reply[1])["name"], claim(json.loads(reply[1])["token"], WAITER_SECRET))

    @rule(data=st.data())
    def refresh_waiter(self, data: st.DataObject) -> None:
        """A live waiter calls acquire again (as after a wake-up or a slice timeout)."""
        if not self.waiters:
            return
        waiter = data.draw(st.sampled_from(self.waiters))
        reply = self._acquire_script(waiter.ticket)
        if reply[0] == "GRANTED":
            self._check_fifo(waiter)
            self.waiters.remove(waiter)
            grant = json.loads(reply[1])
            with contextlib.suppress(LeaseLost):  # handed over while it did not refresh: expired since
                self.store.release(grant["name"], claim(grant["token"], WAITER_SECRET))
        elif reply[0] == "WAIT":
            waiter.refreshed_at = time.monotonic()
        else:
            self.waiters.remove(waiter)

    @rule(data=st.data())
    def waiter_gives_up(self, data: st.DataObject) -> None:
        if self.waiters:
            waiter = data.draw(st.sampled_from(self.waiters))
            self.store.cancel(waiter.ticket)
            self.waiters.remove(waiter)

    @rule(grant=leases)
    def renew(self, grant: Grant | object) -> None:
        if isinstance(grant, Grant):
            try:
                expires = self.store.renew(grant.name, grant.token)
            except (LeaseLost, LeaseNotOwned):
                return  # expired, revoked, or the container went to another holder since
            assert expires <= grant.cap_ms, "renewal went past the hard cap"

    @rule(grant=consumes(leases), outcome=st.sampled_from(list(Outcome)), target=released)
    def release(self, grant: Grant | object, outcome: Outcome) -> Grant | object:
        if isinstance(grant, Grant):
            expected = self._live_head()
            handed_before = set(self.client.hkeys(self.keys.handoffs))
            with contextlib.suppress(LeaseLost, LeaseNotOwned):
                self.store.release(grant.name, grant.token, outcome)
            handed = set(self.client.hkeys(self.keys.handoffs)) - handed_before
            if handed and expected is not None:
                assert handed == {expected.encode()}, f"a release handed the container to {handed}, not the oldest live waiter {expected}"
        return grant

    @rule(grant=released)
    def release_twice(self, grant: Grant | object) -> None:
        if isinstance(grant, Grant):
            self._rejected_changes_nothing(lambda: self.store.release(grant.name, grant.token))

    @rule(grant=leases, forgery=st.sampled_from(["random", "generation", "epoch"]))
    def forged_token(self, grant: Grant | object, forgery: str) -> None:
        if not isinstance(grant, Grant):
            return
        epoch, generation, random_part = grant.token.split(":")
        forged = {
            "random": f"{epoch}:{generation}:{secrets.token_hex(8)}",
            "generation": f"{epoch}:{int(generation) + 1000}:{random_part}",
            "epoch": f"{secrets.token_hex(8)}:{generation}:{random_part}",
        }[forgery]
        self._rejected_changes_nothing(lambda: self.store.release(grant.name, forged), expect_error=True)
        self._rejected_changes_nothing(lambda: self.store.renew(grant.name, forged), expect_error=True)

    @rule(factor=st.sampled_from([0.5, 1.1, 3.5]))
    def let_time_pass(self, factor: float) -> None:
        """Every holder stops renewing for a while (a pause, or just a slow job)."""
        time.sleep(TTL_S * factor)

    @rule()
    def reap_and_recycle(self) -> None:
        """What the supervisor does: end expired leases, then recycle what must be recycled."""
        self.store.reap()
        for _name, rec in self.store.snapshot().containers.items():
            if rec.state is ContainerState.RESTARTING:
                self.store.register(record(rec.slot))

    @rule(slot=st.integers(1, CONTAINERS))
    def container_removed_and_back(self, slot: int) -> None:
        self.store.deregister(f"container-{slot:03d}", "vanished")
        self._check_structure()
        self.store.register(record(slot))

    @rule()
    def wipe_redis(self) -> None:
        """Amnesia: Redis restarted empty. Every earlier token must be dead afterwards."""
        self.client.flushall()
        self.waiters.clear()
        self.epoch_start = "0-0"
        self.register_containers()

    # -- invariants ----------------------------------------------------------------------
    @invariant()
    def leases_never_overlap(self) -> None:
        assert_one_lease_at_a_time(self.client, self.keys)

    @invariant()
    def structure(self) -> None:
        self._check_structure()

    @invariant()
    def no_lease_past_the_hard_cap(self) -> None:
        snapshot = self.store.snapshot()
        for lease in snapshot.leases.values():
            assert lease.expires_ms <= lease.cap_ms
            assert lease.cap_ms - lease.granted_ms == int(CAP_S * 1000)
        for fields in stream_entries(self.client, self.keys.events):
            if fields[b"kind"] == b"released":
                assert int(fields[b"duration_ms"]) <= CAP_S * 1000, "a lease was released after its hard cap"

    # -- helpers -------------------------------------------------------------------------
    def _check_structure(self) -> None:
        snapshot = self.store.snapshot()
        free = self.client.zrange(self.keys.free, 0, -1)
        assert len(free) == len(set(free))
        for name, rec in snapshot.containers.items():
            in_free, leased = name in snapshot.free, name in snapshot.leases
            assert (rec.state is ContainerState.AVAILABLE) == in_free, f"{name} is {rec.state} but in free set: {in_free}"
            assert (rec.state in {ContainerState.ALLOCATED, ContainerState.DRAINING}) == leased, f"{name} is {rec.state}, leased: {leased}"
        assert set(snapshot.free) <= set(snapshot.containers)
        assert set(snapshot.leases) <= set(snapshot.containers)

    def _live_head(self) -> str | None:
        """The oldest ticket whose deadline is surely ahead on the server's clock (None if unsure)."""
        seconds, micros = self.client.time()
        now_ms = seconds * 1000 + micros // 1000
        scored = cast(list[tuple[bytes, float]], self.client.zrange(self.keys.waiter_deadlines, 0, -1, withscores=True))
        deadlines = {t.decode(): d for t, d in scored}
        for ticket in cast(list[bytes], self.client.zrange(self.keys.waiters, 0, -1)):
            left_ms = deadlines.get(ticket.decode(), 0) - now_ms
            if left_ms > 50:
                return str(ticket.decode())
            if left_ms > -50:
                return None  # too close to its deadline to say whether the script saw it alive
        return None

    def _check_fifo(self, granted: Waiter) -> None:
        """No older waiter that was surely alive (refreshed well within its TTL) was skipped."""
        now = time.monotonic()
        for waiter in self.waiters:
            if waiter.seq < granted.seq and now - waiter.refreshed_at < WAITER_TTL_S * 0.5:
                still_waiting = self._acquire_script(waiter.ticket)[0] == "WAIT"
                assert not still_waiting, f"ticket {granted.seq} was granted before the older live ticket {waiter.seq}"

    def _acquire_script(self, ticket: str) -> list[str]:
        holder = {
            "test_run_id": "waiter",
            "job_id": "",
            "worker": "",
            "ttl_ms": int(TTL_S * 1000),
            "cap_ms": int(CAP_S * 1000),
            "random": secret_digest(WAITER_SECRET),
        }
        return self.store._run(Op.ACQUIRE, ticket, json.dumps(holder), int(WAITER_TTL_S * 1000), "wait")

    def _rejected_changes_nothing(self, operation: object, expect_error: bool = False) -> None:
        before = dump_state(self.client, POOL)
        try:
            result = operation()  # type: ignore[operator]
        except (LeaseLost, LeaseNotOwned):
            result = "rejected"
        if expect_error:
            assert result == "rejected", f"a forged token was accepted ({result})"
        if result in {"rejected", "noop"}:
            assert dump_state(self.client, POOL) == before, "a rejected operation changed the pool's keys"


_NOTHING = object()
SERVER: dict[str, redis.Redis] = {}


@pytest.fixture
def machine_server(redis_server: str) -> None:
    SERVER["client"] = redis.Redis.from_url(redis_server)


LeaseMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)


@pytest.mark.usefixtures("machine_server")
class TestLeaseProtocol(LeaseMachine.TestCase):  # type: ignore[valid-type, misc]  # hypothesis makes TestCase at run time
    pass
