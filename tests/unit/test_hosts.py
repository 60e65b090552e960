"""Several Docker hosts, one pool: unique names, growth decided once, a dead host's free
containers leave the pool. FakeRuntime per host and one fakeredis."""

from __future__ import annotations

from pathlib import Path

import fakeredis

from cinnamon_pool.clock import ManualClock
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.health import ProbeResult
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.logs.writer import DailyLogWriter
from cinnamon_pool.model import ContainerRecord, ContainerState, Holder
from cinnamon_pool.supervisor.loop import Supervisor
from cinnamon_pool.supervisor.rules import find_stranded
from tests.fakes import FakeRuntime

TABLES = {
    "pool": {"name": "qa", "min_size": 1, "max_size": 4, "initial_size": 2},
    "container": {"image": "cinnamon-pool/fake-mcp:test", "host_port_range": "3000-3009"},
    "rules": {"scale_cooldown_s": 60},
}


def host(tmp_path: Path, client: fakeredis.FakeRedis, name: str) -> tuple[Supervisor, FakeRuntime]:
    runtime = FakeRuntime(host=name)
    clock = ManualClock()
    supervisor = Supervisor(
        PoolConfig.from_tables(TABLES),
        LeaseStore(client, "qa", host=name),
        runtime,
        DailyLogWriter(tmp_path / name, clock=clock),
        clock=clock,
        probe=lambda url, timeout: ProbeResult(True, 0.01),
    )
    return supervisor, runtime


def test_two_hosts_serve_one_pool_with_unique_names_and_their_own_ports(tmp_path: Path) -> None:
    client = fakeredis.FakeRedis()
    (a, _), (b, runtime_b) = host(tmp_path, client, "host-a"), host(tmp_path, client, "host-b")
    for supervisor in (a, b, a, b):
        supervisor.tick()
    snapshot = LeaseStore(client, "qa").snapshot()
    names = {name: record.host for name, record in snapshot.containers.items()}
    assert names == {"container-001": "host-a", "container-002": "host-a", "container-1001": "host-b", "container-1002": "host-b"}
    assert snapshot.hosts == {"host-a": 0, "host-b": 1}
    ports = {c.host_port for c in runtime_b.containers.values()}
    assert ports == {3000, 3001}, "each host publishes on its own port range, from its first port"
    assert {c.labels["cinnamon.host"] for c in runtime_b.containers.values()} == {"host-b"}
    granted = {LeaseStore(client, "qa").acquire(Holder(f"run-{i}"), timeout_s=0, wait=False).host for i in range(4)}
    assert granted == {"host-a", "host-b"}, "acquire takes a free container from any host"


def test_waiting_jobs_make_one_host_grow_not_every_host(tmp_path: Path) -> None:
    client = fakeredis.FakeRedis()
    (a, _), (b, _) = host(tmp_path, client, "host-a"), host(tmp_path, client, "host-b")
    for supervisor in (a, b, a, b):
        supervisor.tick()
    store = LeaseStore(client, "qa")
    for i in range(4):
        store.acquire(Holder(f"run-{i}"), timeout_s=0, wait=False)
    client.zadd(store.keys.waiters, {"a" * 32: 1})  # one job waits, nothing is free
    client.zadd(store.keys.waiter_deadlines, {"a" * 32: 10**15})
    a.tick(), b.tick()
    assert store.snapshot().desired == {"host-a": 3, "host-b": 2}, "only the first host to see the waiter grew"


def test_a_dead_hosts_free_containers_leave_the_free_set() -> None:
    record = ContainerRecord("container-1001", "b" * 64, 1001, "host-b", "http://127.0.0.1:1/mcp", ContainerState.AVAILABLE)
    leased = ContainerRecord("container-1002", "c" * 64, 1002, "host-b", "http://127.0.0.1:1/mcp", ContainerState.ALLOCATED)
    mine = ContainerRecord("container-001", "a" * 64, 1, "host-a", "http://127.0.0.1:1/mcp", ContainerState.AVAILABLE)
    records = {r.name: r for r in (record, leased, mine)}
    free = {"container-1001", "container-001"}
    (change,) = find_stranded(records, "host-a", live_hosts=set(), free=free)
    assert (change.name, change.state, change.only_if_free) == ("container-1001", ContainerState.RESTARTING, True)
    assert find_stranded(records, "host-a", live_hosts={"host-b"}, free=free) == [], "a live host's containers stay"


def test_after_redis_lost_its_data_a_host_takes_its_index_back_unless_another_took_it(tmp_path: Path) -> None:
    client = fakeredis.FakeRedis()
    (a, _), (b, _) = host(tmp_path, client, "host-a"), host(tmp_path, client, "host-b")
    a.tick(), b.tick()
    client.flushall()
    b.tick(), a.tick()
    assert LeaseStore(client, "qa").snapshot().hosts == {"host-a": 0, "host-b": 1}, "each took its old index back"
    client.flushall()
    c, _ = host(tmp_path, client, "host-c")
    c.tick(), a.tick()
    assert LeaseStore(client, "qa").snapshot().hosts == {"host-c": 0, "host-a": 1}, "a taken index is never shared"
