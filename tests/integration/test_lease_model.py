"""The lease protocol against a reference model: a Hypothesis state machine on a real
redis-server, three clients (each its own connection) stepping in turn.

The model is the pool as a user pictures it: which containers are free, which leased and by
which token (and which client), which are restarting, each container's error count, the queue
of waiters oldest first, and the grants handed to a waiter that has not picked its grant up
yet. It predicts every reply: which container a grant can be, a waiter's position, where a
release sends its container (the oldest waiter, the free set, or a restart after the error
threshold), what a stale or forged token gets. After every step Redis must agree with it
exactly, the queue's order included.

TTLs are long, so nothing expires during a run and the model needs no clock: expiry and
reaping are what ``test_lease_state_machine.py`` and ``test_concurrent_leases.py`` exercise.

FIFO: a container a release or a cancel frees while waiters queue goes to the oldest one; the
model names which, and that waiter's next acquire must return it. Liveness: each run ends by
releasing every lease and picking up every hand-off until the queue is empty; every waiter is
served, in its order. ``CINNAMON_MODEL_STEPS`` sets the steps (5,000 in ``make test``, 50,000 in
``make soak``); the test counts the steps actually taken and fails below that. The steps are a
floor: exploration goes on, up to 4x, until every rule was taken. Each run starts from drawn
error counts (``containers_failed_before``), so a restart after three infra errors in a row is
within a run's reach.
"""

from __future__ import annotations

import json
import os
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import cast

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from cinnamon_pool import tokens
from cinnamon_pool.errors import LeaseLost, LeaseNotOwned, PoolExhausted
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.calls import acquire_request, claimed
from cinnamon_pool.lease.scripts import Op, Status
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import ContainerState, Grant, Holder, Outcome
from tests.lease_helpers import record

pytestmark = pytest.mark.redis

POOL = "model"
CONTAINERS, CLIENTS, THRESHOLD = 3, 3, 3
TTL_S, CAP_S, WAITER_TTL_S = 600.0, 3600.0, 600.0  # nothing expires during a run
STEPS = int(os.environ.get("CINNAMON_MODEL_STEPS", "5000"))
STEPS_PER_RUN = 50
NAMES = [f"container-{slot:03d}" for slot in range(1, CONTAINERS + 1)]


@dataclass
class Held:
    client: int
    grant: Grant | None  # None: handed to a waiter that has not picked it up (its token unknown yet)
    ticket: str = ""


@dataclass
class Waiter:
    client: int
    ticket: str
    secret: str


@dataclass
class Model:
    free: set[str] = field(default_factory=lambda: set(NAMES))
    leases: dict[str, Held] = field(default_factory=dict)
    restarting: set[str] = field(default_factory=set)
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NAMES, 0))
    queue: list[Waiter] = field(default_factory=list)  # oldest first
    handed: dict[str, tuple[Waiter, str]] = field(default_factory=dict)  # ticket -> (waiter, container) not picked up
    last: dict[str, str] = field(default_factory=dict)  # container -> the token its last release ended
    ended: list[Grant] = field(default_factory=list)
    served: list[str] = field(default_factory=list)  # tickets, in the order the model handed them containers

    def offer(self, name: str) -> None:
        """A container ready to serve: to the oldest waiter, else to the free set."""
        if self.queue:
            waiter = self.queue.pop(0)
            self.handed[waiter.ticket] = (waiter, name)
            self.leases[name] = Held(waiter.client, None, waiter.ticket)
            self.served.append(waiter.ticket)
        else:
            self.free.add(name)


STEPS_TAKEN: Counter[str] = Counter()  # by rule
URL: list[str] = []


class LeaseModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clients = [redis.Redis.from_url(URL[0]) for _ in range(CLIENTS)]
        self.clients[0].flushall()
        self.reader = redis.Redis.from_url(URL[0], decode_responses=True)
        self.stores = [
            LeaseStore(client, POOL, lease_ttl_s=TTL_S, max_lease_s=CAP_S, error_threshold=THRESHOLD, waiter_ttl_s=WAITER_TTL_S)
            for client in self.clients
        ]
        for slot in range(1, CONTAINERS + 1):
            self.stores[0].register(record(slot))
        self.model = Model()
        self.keys = PoolKeys(POOL)

    def teardown(self) -> None:
        """Liveness: release every lease, pick up every hand-off, until no one waits."""
        try:
            for _ in range(4 * (len(self.model.queue) + CONTAINERS) + 4):
                for ticket in list(self.model.handed):
                    self._pick_up(ticket)
                held = [name for name, lease in self.model.leases.items() if lease.grant is not None]
                if not held and not self.model.queue and not self.model.handed:
                    break
                for name in held:
                    self._release(name, Outcome.OK)
                self.agrees_with_redis()
            assert not self.model.queue and not self.model.handed, f"waiters never served: {self.model.queue} {self.model.handed}"
        finally:
            for client in [*self.clients, self.reader]:
                client.close()

    @initialize(errors=st.lists(st.integers(0, THRESHOLD - 1), min_size=CONTAINERS, max_size=CONTAINERS))
    def containers_failed_before(self, errors: list[int]) -> None:
        """Each run starts from drawn error counts, made by real releases that report infra errors
        (the others' releases report test failures, which keep a count as it is). A restart after
        the threshold is then a few steps away rather than a rare run of them: with every count
        at 0, ``supervisor_recycles`` went untaken in 20,000 random steps."""
        for round_ in range(max(errors)):
            for _ in NAMES:
                self._acquire_now(0)
            for name, count in zip(NAMES, errors, strict=True):
                self._release(name, Outcome.INFRA_ERROR if count > round_ else Outcome.TEST_FAILED)

    # -- the clients' steps ----------------------------------------------------------------
    @rule(client=st.integers(0, CLIENTS - 1))
    def acquire_without_waiting(self, client: int) -> None:
        self._step("acquire_without_waiting")
        self._acquire_now(client)

    def _acquire_now(self, client: int) -> None:
        try:
            grant = self.stores[client].acquire(Holder(f"now-{client}"), timeout_s=0, wait=False)
        except PoolExhausted:
            assert not self.model.free, f"refused while {sorted(self.model.free)} were free"
            return
        assert grant.name in self.model.free, f"granted {grant.name}, not one of the free {sorted(self.model.free)}"
        self.model.free.remove(grant.name)
        self.model.leases[grant.name] = Held(client, grant)

    @rule(client=st.integers(0, CLIENTS - 1))
    def acquire_and_wait(self, client: int) -> None:
        self._step("acquire_and_wait")
        waiter = Waiter(client, secrets.token_hex(16), tokens.new_secret())
        reply = self._acquire(waiter)
        if self.model.free:
            assert reply[0] == Status.GRANTED, f"{reply[0]} while {sorted(self.model.free)} were free"
            grant = claimed(reply[1], waiter.secret)
            assert grant.name in self.model.free
            self.model.free.remove(grant.name)
            self.model.leases[grant.name] = Held(client, grant, waiter.ticket)
        else:
            assert reply[:2] == [Status.WAIT, len(self.model.queue) + 1], f"{reply[:2]}: the queue had {len(self.model.queue)}"
            self.model.queue.append(waiter)

    @precondition(lambda self: bool(self.model.queue or self.model.handed))
    @rule(data=st.data())
    def waiter_asks_again(self, data: st.DataObject) -> None:
        """A waiter's acquire again (after a wake-up, or a slice of its wait): its hand-off, or
        its place in the queue."""
        self._step("waiter_asks_again")
        tickets = [w.ticket for w in self.model.queue] + list(self.model.handed)
        ticket = data.draw(st.sampled_from(tickets))
        if ticket in self.model.handed:
            self._pick_up(ticket)
            return
        position = tickets.index(ticket)
        waiter = self.model.queue[position]
        assert self._acquire(waiter)[:2] == [Status.WAIT, position + 1], f"ticket {ticket} is not at {position + 1}"

    @precondition(lambda self: bool(self.model.queue or self.model.handed))
    @rule(data=st.data())
    def waiter_gives_up(self, data: st.DataObject) -> None:
        self._step("waiter_gives_up")
        tickets = [w.ticket for w in self.model.queue] + list(self.model.handed)
        ticket = data.draw(st.sampled_from(tickets))
        waiter = next((w for w in self.model.queue if w.ticket == ticket), None) or self.model.handed[ticket][0]
        self.stores[waiter.client].cancel(ticket)
        if ticket in self.model.handed:  # handed meanwhile: the container goes back, to the next waiter or the free set
            _, name = self.model.handed.pop(ticket)
            del self.model.leases[name]
            self.model.last.pop(name, None)  # it ended a token none of ours knew
            self.model.offer(name)
        else:
            self.model.queue.remove(waiter)

    @precondition(lambda self: any(lease.grant for lease in self.model.leases.values()))
    @rule(data=st.data())
    def renew(self, data: st.DataObject) -> None:
        self._step("renew")
        name = data.draw(st.sampled_from(sorted(n for n, lease in self.model.leases.items() if lease.grant)))
        held = self.model.leases[name]
        assert held.grant is not None
        assert self.stores[held.client].renew(name, held.grant.token) <= held.grant.cap_ms

    @precondition(lambda self: any(lease.grant for lease in self.model.leases.values()))
    @rule(data=st.data(), outcome=st.sampled_from(list(Outcome)))
    def release(self, data: st.DataObject, outcome: Outcome) -> None:
        self._step("release")
        self._release(data.draw(st.sampled_from(sorted(n for n, lease in self.model.leases.items() if lease.grant))), outcome)

    @precondition(lambda self: bool(self.model.ended))
    @rule(data=st.data(), client=st.integers(0, CLIENTS - 1))
    def stale_token(self, data: st.DataObject, client: int) -> None:
        """A token whose lease ended: released again, or renewed; refused, and nothing changes."""
        self._step("stale_token")
        grant = data.draw(st.sampled_from(self.model.ended))
        if self.model.last.get(grant.name) == tokens.fingerprint(grant.token):
            assert self.stores[client].release(grant.name, grant.token) == "noop", "a second release of the last lease is a no-op"
        else:
            with pytest.raises(LeaseNotOwned if grant.name in self.model.leases else LeaseLost):
                self.stores[client].release(grant.name, grant.token)
        with pytest.raises(LeaseNotOwned if grant.name in self.model.leases else LeaseLost):
            self.stores[client].renew(grant.name, grant.token)

    @precondition(lambda self: any(lease.grant for lease in self.model.leases.values()))
    @rule(data=st.data(), client=st.integers(0, CLIENTS - 1))
    def forged_token(self, data: st.DataObject, client: int) -> None:
        """Another secret on a live lease's epoch and generation: refused, nothing changes."""
        self._step("forged_token")
        name = data.draw(st.sampled_from(sorted(n for n, lease in self.model.leases.items() if lease.grant)))
        grant = self.model.leases[name].grant
        assert grant is not None
        epoch, generation, _ = grant.token.split(":")
        forged = f"{epoch}:{generation}:{tokens.new_secret()}"
        with pytest.raises(LeaseNotOwned):
            self.stores[client].release(name, forged)
        with pytest.raises(LeaseNotOwned):
            self.stores[client].renew(name, forged)

    @precondition(lambda self: bool(self.model.restarting))
    @rule(data=st.data())
    def supervisor_recycles(self, data: st.DataObject) -> None:
        """A restarted container registers again: its error count starts over, and it is offered."""
        self._step("supervisor_recycles")
        name = data.draw(st.sampled_from(sorted(self.model.restarting)))
        self.stores[0].register(record(NAMES.index(name) + 1))
        self.model.restarting.remove(name)
        self.model.errors[name] = 0
        self.model.offer(name)

    # -- the model and Redis agree ------------------------------------------------------------
    @invariant()
    def agrees_with_redis(self) -> None:
        snapshot = self.stores[0].snapshot()
        model = self.model
        assert set(snapshot.free) == model.free, f"free: Redis {sorted(snapshot.free)}, model {sorted(model.free)}"
        assert set(snapshot.leases) == set(model.leases), f"leased: Redis {sorted(snapshot.leases)}, model {sorted(model.leases)}"
        for name, held in model.leases.items():
            if held.grant is not None:
                assert snapshot.leases[name].token == tokens.fingerprint(held.grant.token), f"{name} is held by another token"
        states = {name: rec.state for name, rec in snapshot.containers.items()}
        assert {n for n, s in states.items() if s is ContainerState.RESTARTING} == model.restarting
        assert {n for n, s in states.items() if s is ContainerState.AVAILABLE} == model.free
        assert {n for n, s in states.items() if s is ContainerState.ALLOCATED} == set(model.leases)
        assert {n: rec.error_count for n, rec in snapshot.containers.items()} == model.errors
        queued = cast(list[str], self.reader.zrange(self.keys.waiters, 0, -1))
        assert queued == [w.ticket for w in model.queue], "the waiters' queue is not the model's, in order"
        handoffs = {t: json.loads(g)["name"] for t, g in cast(dict[str, str], self.reader.hgetall(self.keys.handoffs)).items()}
        assert len(handoffs) == len(model.leases), "every live lease, and only those, keeps its grant under its ticket"
        for ticket, (_, name) in model.handed.items():
            assert handoffs.get(ticket) == name, f"ticket {ticket} should hold {name}'s grant"

    # -- helpers ----------------------------------------------------------------------------
    def _step(self, rule: str) -> None:
        STEPS_TAKEN[rule] += 1

    def _acquire(self, waiter: Waiter) -> list[str]:
        request = acquire_request(Holder(f"waiter-{waiter.client}"), TTL_S, CAP_S, waiter.secret)
        return self.stores[waiter.client]._run(Op.ACQUIRE, waiter.ticket, request, int(WAITER_TTL_S * 1000), "wait")

    def _pick_up(self, ticket: str) -> None:
        waiter, name = self.model.handed.pop(ticket)
        reply = self._acquire(waiter)
        assert reply[0] == Status.GRANTED, f"ticket {ticket} was handed {name}, but its acquire says {reply[0]}"
        grant = claimed(reply[1], waiter.secret)
        assert grant.name == name, f"ticket {ticket} got {grant.name}; the oldest waiter was due {name}"
        self.model.leases[name] = Held(waiter.client, grant, ticket)

    def _release(self, name: str, outcome: Outcome) -> None:
        held = self.model.leases.pop(name)
        assert held.grant is not None
        went = self.stores[held.client].release(name, held.grant.token, outcome)
        self.model.ended.append(held.grant)
        self.model.last[name] = tokens.fingerprint(held.grant.token)
        errors = self.model.errors
        errors[name] = errors[name] + 1 if outcome is Outcome.INFRA_ERROR else 0 if outcome is Outcome.OK else errors[name]
        if errors[name] >= THRESHOLD:
            self.model.restarting.add(name)
            expected = "restarting"
        else:
            expected = "handed" if self.model.queue else "available"
            self.model.offer(name)
        assert went == expected, f"release of {name} ({outcome}): Redis says {went}, the model {expected}"


def test_the_lease_protocol_agrees_with_its_model(redis_server: str) -> None:
    URL[:] = [redis_server]
    STEPS_TAKEN.clear()
    rules = {name for name, member in vars(LeaseModel).items() if hasattr(member, "hypothesis_stateful_rule")}
    while STEPS_TAKEN.total() < STEPS or (not rules <= set(STEPS_TAKEN) and STEPS_TAKEN.total() < 4 * STEPS):
        runs = settings(
            max_examples=max(1, -(-(STEPS - STEPS_TAKEN.total()) // STEPS_PER_RUN)),
            stateful_step_count=STEPS_PER_RUN,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        run_state_machine_as_test(LeaseModel, settings=runs)
    print(f"{STEPS_TAKEN.total()} steps: {dict(STEPS_TAKEN.most_common())}")
    assert rules <= set(STEPS_TAKEN), f"rules never taken: {sorted(rules - set(STEPS_TAKEN))}"
