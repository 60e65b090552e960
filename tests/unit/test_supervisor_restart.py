"""A supervisor adopts the pool as Redis describes it, and never trusts what it reads there.

FakeRuntime and fakeredis; the same behaviours against real processes, a real redis-server and
the real engine are in tests/integration/test_supervisor_hostile.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from cinnamon_pool.clock import ManualClock
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.health import ProbeResult
from cinnamon_pool.lease.replication import Lineage
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.logs.format import parse
from cinnamon_pool.logs.writer import DailyLogWriter
from cinnamon_pool.model import Holder
from cinnamon_pool.supervisor.loop import Supervisor
from cinnamon_pool.tokens import claim, secret_digest
from tests.fakes import FakeRuntime

TABLES: dict[str, dict[str, Any]] = {
    "pool": {"name": "qa", "min_size": 1, "max_size": 4, "initial_size": 2},
    "container": {"image": "cinnamon-pool/fake-mcp:test"},
    "rules": {"scale_cooldown_s": 0, "idle_shrink_s": 60},
}


def supervisor(tmp_path: Path, client: fakeredis.FakeRedis, runtime: FakeRuntime, clock: ManualClock, **rules: float) -> Supervisor:
    config = PoolConfig.from_tables({**TABLES, "rules": {**TABLES["rules"], **rules}})
    store = LeaseStore(client, "qa", host=runtime.host)
    writer = DailyLogWriter(tmp_path, clock=clock)
    return Supervisor(config, store, runtime, writer, clock=clock, probe=lambda url, timeout: ProbeResult(True, 0.01))


def errors(tmp_path: Path) -> list[str]:
    files = sorted((tmp_path / "containers").glob("container-errors-*.log"))
    return [r.detail("Error") or "" for f in files for r in parse(f.read_text().splitlines(keepends=True))]


WAITER_SECRET = "0" * 16  # the secret of the waiter the test queues by hand


def scaled_to_four(tmp_path: Path) -> tuple[fakeredis.FakeRedis, FakeRuntime, ManualClock, LeaseStore, list[tuple[str, str]]]:
    """A pool grown to four, all leased; returns each lease as (container, its holder's token)."""
    client, runtime, clock = fakeredis.FakeRedis(), FakeRuntime(), ManualClock()
    first = supervisor(tmp_path, client, runtime, clock)
    first.tick(), first.tick()
    store = LeaseStore(client, "qa")
    held: dict[str, str] = {}
    for i in (1, 2):
        grant = store.acquire(Holder(f"run-{i}"), timeout_s=0, wait=False)
        held[grant.name] = grant.token
    client.zadd(store.keys.waiters, {"a" * 32: 10**9})  # one waiter that stays, so the pool grows
    client.zadd(store.keys.waiter_deadlines, {"a" * 32: 10**15})
    client.hset(
        store.keys.tickets,
        "a" * 32,
        '{"test_run_id": "run-w", "job_id": "", "worker": "", "ttl_ms": 30000, "cap_ms": 60000, "random": "'
        + secret_digest(WAITER_SECRET)
        + '"}',
    )
    for _ in range(4):
        first.tick()
    client.delete(store.keys.waiters, store.keys.waiter_deadlines, store.keys.tickets)
    assert store.snapshot().desired == {runtime.host: 4}, "the grown size is stored in Redis"
    for name in store.snapshot().free:
        grant = store.acquire(Holder(f"run-{name}"), timeout_s=0, wait=False)
        held[grant.name] = grant.token
    leases = store.snapshot().leases  # jobs, and the waiter a grown slot was handed to
    assert sorted(leases) == ["container-001", "container-002", "container-003", "container-004"]
    for name, lease in leases.items():
        if name not in held:  # the waiter's
            held[name] = claim(lease.token, WAITER_SECRET)
    return client, runtime, clock, store, sorted(held.items())


def test_a_new_supervisor_adopts_the_grown_size_and_keeps_every_lease(tmp_path: Path) -> None:
    client, runtime, clock, store, grants = scaled_to_four(tmp_path)
    containers_before = set(runtime.containers)
    successor = supervisor(tmp_path, client, runtime, clock)  # a restart, or a standby taking over
    for _ in range(3):
        successor.tick()
    for name, token in grants:
        store.renew(name, token)  # raises LeaseLost if revoked
    assert set(runtime.containers) == containers_before, "no container was removed or created"
    assert [c for c in runtime.calls if c[0] in {"remove", "restart"}] == []


def test_the_pool_shrinks_only_after_the_scaled_slots_are_released_and_idle(tmp_path: Path) -> None:
    client, runtime, clock, store, grants = scaled_to_four(tmp_path)
    successor = supervisor(tmp_path, client, runtime, clock, idle_shrink_s=0.001)  # (Redis time: not the manual clock)
    clock.advance(120)
    successor.tick()
    assert len(runtime.containers) == 4, "leased containers stay however long they are held"
    for name, token in grants:
        store.release(name, token)
    for _ in range(6):
        time.sleep(0.002)
        successor.tick()
    assert store.snapshot().desired[runtime.host] == 1, "idle slots shrink one by one down to min_size"
    assert len(runtime.containers) == 1 and sorted(store.snapshot().containers) == ["container-001"]


@pytest.mark.parametrize(
    ("key", "field", "value"),
    [
        ("containers", "container-001", b"\xff\x00not json"),
        ("containers", "container-009", b'{"name": "container-009", "container_id": 5}'),
        ("leases", "container-001", b"[1, 2, 3]"),
        ("memory", "container-001", b"lots"),
        ("desired", "fake-host", b"-3"),
        ("free", "container-077", None),
    ],
)
def test_a_malformed_value_is_reported_once_and_dropped_and_the_pool_serves_on(
    tmp_path: Path, key: str, field: str, value: bytes | None
) -> None:
    client, runtime, clock = fakeredis.FakeRedis(), FakeRuntime(), ManualClock()
    sup = supervisor(tmp_path, client, runtime, clock)
    sup.tick(), sup.tick()
    keys = LeaseStore(client, "qa").keys
    full_key = getattr(keys, key)
    if value is None:
        client.zadd(full_key, {field: 0})
    else:
        client.hset(full_key, field, value)
    for _ in range(3):
        assert sup.tick().error is None
    reported = [e for e in errors(tmp_path) if e.startswith("bad value in Redis")]
    assert len(reported) == 1, f"reported once, got {reported}"
    store = LeaseStore(client, "qa")
    snapshot = store.snapshot()
    assert snapshot.rejected == () or all(r.key == "memory" for r in snapshot.rejected), snapshot.rejected
    assert sorted(snapshot.free) == ["container-001", "container-002"], "the pool converged"
    store.acquire(Holder("after"), timeout_s=0, wait=False)


def test_a_malformed_stream_entry_is_reported_once_and_acknowledged(tmp_path: Path) -> None:
    client, runtime, clock = fakeredis.FakeRedis(), FakeRuntime(), ManualClock()
    sup = supervisor(tmp_path, client, runtime, clock)
    sup.tick()
    keys = LeaseStore(client, "qa").keys
    client.xadd(keys.events, {"kind": "granted", "name": "container-001", "at_ms": "1", "token": "t", "test_run_id": "r", "wait_ms": "x"})
    client.xadd(keys.events, {"kind": "\x1b[2Jboom", "name": "\n" * 3})
    for _ in range(3):
        assert sup.tick().error is None
    reported = [e for e in errors(tmp_path) if e.startswith("bad value in Redis")]
    assert len(reported) == 2, reported
    assert client.xpending(keys.events, "cinnamon-logs")["pending"] == 0


def test_a_forged_record_never_reaches_docker(tmp_path: Path) -> None:
    client, runtime, clock = fakeredis.FakeRedis(), FakeRuntime(), ManualClock()
    sup = supervisor(tmp_path, client, runtime, clock)
    sup.tick(), sup.tick()
    foreign = runtime.add_foreign({})  # unlabelled: the engine lists it for nobody's pool
    keys = LeaseStore(client, "qa").keys
    for name, slot, state in [("container-002", 2, "restarting"), ("container-004", 4, "available"), ("container-003", 3, "unhealthy")]:
        forged = f'{{"name": "{name}", "container_id": "{foreign}", "slot": {slot}, "host": "fake-host", "endpoint": "http://127.0.0.1:1/mcp", "state": "{state}"}}'
        client.hset(keys.containers, name, forged)
        client.zadd(keys.free, {name: 0})
        for _ in range(3):
            sup.tick()
        assert foreign in runtime.containers, f"the foreign container survived a forged {state} record"
        assert all(call[1] != foreign for call in runtime.calls)
        assert LeaseStore(client, "qa").snapshot().containers.get(name, None) is None or name == "container-002"
    assert sum("Docker does not report for this pool" in e for e in errors(tmp_path)) == 3


@pytest.mark.parametrize(
    ("raw", "error"),
    [(b"lots", "bad value in Redis"), (b"-1", "bad value in Redis"), (b"9", "scale 9 refused: outside pool.min_size..max_size (1..4)")],
)
def test_a_size_request_that_is_not_ours_or_out_of_bounds_is_refused_and_dropped(tmp_path: Path, raw: bytes, error: str) -> None:
    client, runtime, clock = fakeredis.FakeRedis(), FakeRuntime(), ManualClock()
    boss = supervisor(tmp_path, client, runtime, clock)
    boss.tick(), boss.tick()
    store = LeaseStore(client, "qa")
    client.set(store.keys.size_request(runtime.host), raw)
    boss.tick()
    assert store.size_request(runtime.host) is None, "dropped once reported"
    assert store.snapshot().desired[runtime.host] == 2, "the size is unchanged"
    assert any(error in text for text in errors(tmp_path)), errors(tmp_path)


def test_a_size_request_is_applied_by_the_leader_and_persisted(tmp_path: Path) -> None:
    client, runtime, clock = fakeredis.FakeRedis(), FakeRuntime(), ManualClock()
    boss = supervisor(tmp_path, client, runtime, clock)
    boss.tick(), boss.tick()
    store = LeaseStore(client, "qa")
    store.request_size(runtime.host, 3)
    boss.tick(), boss.tick()
    assert store.size_request(runtime.host) is None and store.snapshot().desired[runtime.host] == 3
    successor = supervisor(tmp_path, client, runtime, clock)
    successor.tick(), successor.tick()
    assert store.snapshot().desired[runtime.host] == 3 and len(store.snapshot().containers) == 3, "a new supervisor adopts it"


def test_the_released_record_has_the_leases_peak_memory_and_memory_read_after_the_cleanup(tmp_path: Path) -> None:
    client, runtime, clock = fakeredis.FakeRedis(), FakeRuntime(), ManualClock()
    boss = supervisor(tmp_path, client, runtime, clock)
    boss.tick(), boss.tick()
    store = LeaseStore(client, "qa")
    grant = store.acquire(Holder("run-peak"), timeout_s=0, wait=False)
    for reading in (180.0, 260.0, 230.0):
        runtime.memory[grant.container_id] = reading
        boss.tick()
    runtime.memory[grant.container_id] = 150.0  # the cleanup let go of the page
    store.release(grant.name, grant.token, cleanup_ms=40.0, cleanup_note="sessions ended")
    boss.tick()
    files = sorted((tmp_path / "containers").glob("container-usage-*.log"))
    records = [r for f in files for r in parse(f.read_text().splitlines(keepends=True))]
    [released] = [r for r in records if r.action == "RELEASED"]
    [cleanup] = [r for r in records if r.action == "CLEANUP_COMPLETED"]
    assert released.detail("Peak Memory") == "260MB"
    assert cleanup.detail("Memory After Cleanup") == "150MB" and cleanup.detail("Cleanup Duration") == "0.04s"


def test_cpu_use_is_read_from_the_counter_and_published_with_status(tmp_path: Path) -> None:
    from cinnamon_pool.config import PoolConfig
    from cinnamon_pool.pool import ContainerPool

    client, runtime, clock = fakeredis.FakeRedis(), FakeRuntime(), ManualClock()
    boss = supervisor(tmp_path, client, runtime, clock)
    boss.tick(), boss.tick()
    store = LeaseStore(client, "qa")
    ids = {name: record.container_id for name, record in store.snapshot().containers.items()}
    runtime.cpu = {ids["container-001"]: 10.0, ids["container-002"]: 4.0}
    boss.tick()
    clock.advance(2.0)
    runtime.cpu = {ids["container-001"]: 11.0, ids["container-002"]: 3.0}  # 002 restarted: its counter began again
    boss.tick()
    assert store.snapshot().cpu_percent == {"container-001": 50.0}, "1 s of CPU in 2 s; a counter that went back is skipped"
    grant = store.acquire(Holder("run-1"), timeout_s=0, wait=False)
    store.release(grant.name, grant.token, cleanup_ms=12.0)
    status = ContainerPool(PoolConfig.from_tables({"pool": {"name": "qa"}}), client=client).status()
    by_name = {c["name"]: c for c in status["containers"]}
    assert by_name["container-001"]["cpu_percent"] == 50.0 and by_name["container-002"]["cpu_percent"] is None
    assert by_name[grant.name]["last_cleanup_at"] and by_name[grant.name]["error_rate"] == 0.0


def test_a_size_request_key_of_another_type_is_reported_and_removed(tmp_path: Path) -> None:
    client, runtime, clock = fakeredis.FakeRedis(), FakeRuntime(), ManualClock()
    boss = supervisor(tmp_path, client, runtime, clock)
    boss.tick(), boss.tick()
    store = LeaseStore(client, "qa")
    client.rpush(store.keys.size_request(runtime.host), b"7")
    boss.tick()
    assert client.exists(store.keys.size_request(runtime.host)) == 0 and store.snapshot().desired[runtime.host] == 2
    assert any("bad value in Redis" in text for text in errors(tmp_path)), errors(tmp_path)


def test_uptime_counts_from_the_last_start_not_from_the_containers_creation(tmp_path: Path) -> None:
    from cinnamon_pool.model import ContainerState

    client, runtime, clock = fakeredis.FakeRedis(), FakeRuntime(), ManualClock()
    sup = supervisor(tmp_path, client, runtime, clock)
    sup.tick(), sup.tick()
    store = LeaseStore(client, "qa")

    def restart_now() -> None:
        store.set_state("container-001", ContainerState.DRAINING, "operator restart")
        sup.tick(), sup.tick(), sup.tick()

    clock.advance(1800)
    runtime.restarted_at = clock.now().timestamp()
    restart_now()
    assert store.snapshot().containers["container-001"].started_at == runtime.restarted_at, "registered with Docker's StartedAt"
    clock.advance(600)
    restart_now()
    files = sorted((tmp_path / "containers").glob("container-pool-*.log"))
    restarts = [r for f in files for r in parse(f.read_text().splitlines(keepends=True)) if r.action == "CONTAINER_RESTART"]
    assert [r.detail("Uptime") for r in restarts][-1] == "10min", "the second restart counts from the first one's start"


def test_a_failover_that_lost_writes_drops_the_pool_state_and_every_container_is_recycled(tmp_path: Path) -> None:
    """Redis's replication history went back (lease/replication.py): the state the pool had is not
    to be trusted, so it is dropped as if Redis had lost it, and every token dies with it."""
    client, runtime, clock = fakeredis.FakeRedis(), FakeRuntime(), ManualClock()
    boss = supervisor(tmp_path, client, runtime, clock)
    seen, promoted = Lineage("a" * 40, 500, "0" * 40, -1), Lineage("b" * 40, 10, "a" * 40, 301)
    histories = iter([seen, seen, promoted])
    boss.observer.lineage = lambda: next(histories, promoted)  # type: ignore[method-assign]
    boss.tick(), boss.tick()
    store = LeaseStore(client, "qa")
    grant = store.acquire(Holder("run-1"), timeout_s=0, wait=False)
    assert not any("lost writes" in e for e in errors(tmp_path)), "the same history: nothing lost"
    boss.tick()  # the new primary had 300 of the 500 bytes seen
    assert any(
        "redis lost writes in a failover: the promoted primary had the old history up to 300, 500 had been seen" in e
        for e in errors(tmp_path)
    )
    assert not client.hexists(store.keys.meta, "epoch") and grant.name not in store.snapshot().leases, "the pool's state is dropped"
    boss.tick(), boss.tick()
    assert any("epoch changed" in e for e in errors(tmp_path)), "then every container is recycled"
    restarted = [container_id for call, container_id in runtime.calls if call == "restart"]
    assert sorted(restarted) == sorted(c.container_id for c in runtime.list("qa") if c.running)
