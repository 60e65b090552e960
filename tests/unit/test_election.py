"""Leader election on the lease store: one leader per host; a deposed leader's writes are refused."""

from __future__ import annotations

import fakeredis
import pytest

from cinnamon_pool.clock import ManualClock
from cinnamon_pool.errors import NotLeader
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import ContainerState
from cinnamon_pool.supervisor.election import LeaderElection
from tests.lease_helpers import record


def pair() -> tuple[LeaderElection, LeaderElection, fakeredis.FakeRedis, ManualClock]:
    client, clock = fakeredis.FakeRedis(), ManualClock()
    first = LeaderElection(LeaseStore(client, "p", host="host-a"), identity="first", clock=clock)
    second = LeaderElection(LeaseStore(client, "p", host="host-a"), identity="second", clock=clock)
    return first, second, client, clock


def test_one_leader_per_host_and_the_other_stands_by() -> None:
    first, second, _client, _clock = pair()
    assert first.step() is True
    assert second.step() is False
    other_host = LeaderElection(LeaseStore(first.store.redis, "p", host="host-b"), identity="third")
    assert other_host.step() is True, "each Docker host has its own leader"


def test_a_deposed_leaders_writes_are_refused() -> None:
    first, second, client, _clock = pair()
    first.step()
    first.store.register(record(1))
    client.delete(first.store.keys.leader("host-a"))  # its key expired (it was paused)
    assert second.step() is True
    with pytest.raises(NotLeader):
        first.store.set_state("container-001", ContainerState.RESTARTING, "stale leader")
    with pytest.raises(NotLeader):
        first.store.register(record(2))
    assert first.store.snapshot().containers["container-001"].state is ContainerState.AVAILABLE


def test_a_leader_that_cannot_renew_stops_acting_at_the_deadline() -> None:
    first, _second, client, clock = pair()
    assert first.step()
    clock.advance(2.5)
    client.set(first.store.keys.leader("host-a"), "someone-else")
    assert first.step() is False, "renewal found another leader"
    assert not first.leading


def test_timings_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="retry < renew deadline < lease"):
        LeaderElection(LeaseStore(fakeredis.FakeRedis(), "p"), lease_s=5, renew_deadline_s=10, retry_s=2)
