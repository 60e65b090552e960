"""The lease scripts through fakeredis (fast); tests/integration repeats them on a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

import cinnamon_pool
from cinnamon_pool import decode
from cinnamon_pool.clock import ManualClock
from cinnamon_pool.errors import LeaseLost, LeaseNotOwned, PoolExhausted, PoolNotReady
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.scripts import Op, Own
from cinnamon_pool.lease.store import NOT_READY_GRACE_S, LeaseStore
from cinnamon_pool.model import ContainerState, Holder, Outcome
from tests.lease_helpers import dump_state, record, store_with
from tests.support import stream_entries


@pytest.fixture(params=["fakeredis", pytest.param("redis-server", marks=pytest.mark.redis)])
def client(request: pytest.FixtureRequest) -> redis.Redis:
    fixture = "fake_redis" if request.param == "fakeredis" else "real_redis"
    return request.getfixturevalue(fixture)  # type: ignore[no-any-return]


def test_grant_is_exclusive_and_carries_a_fencing_token(client: redis.Redis) -> None:
    store = store_with(client, 2)
    first = store.acquire(Holder("run-1"), timeout_s=0, wait=False)
    second = store.acquire(Holder("run-2"), timeout_s=0, wait=False)
    assert first.name != second.name
    epoch = store.snapshot().epoch
    assert first.token.split(":")[0] == epoch and second.token.split(":")[0] == epoch
    assert int(second.token.split(":")[1]) > int(first.token.split(":")[1]), "generations must increase"
    with pytest.raises(PoolExhausted) as caught:
        store.acquire(Holder("run-3"), timeout_s=0, wait=False)
    assert "available=0" in str(caught.value) and "total=2" in str(caught.value)


def test_release_frees_the_container_and_a_second_release_is_a_noop(client: redis.Redis) -> None:
    store = store_with(client, 1)
    grant = store.acquire(Holder("run-1"), timeout_s=0, wait=False)
    assert store.release(grant.name, grant.token) == "available"
    before = dump_state(client, "unit")
    assert store.release(grant.name, grant.token) == "noop"
    assert dump_state(client, "unit") == before, "a second release must change nothing"
    again = store.acquire(Holder("run-2"), timeout_s=0, wait=False)
    assert again.name == grant.name and again.token != grant.token


def test_a_forged_token_is_rejected_and_changes_nothing(client: redis.Redis) -> None:
    store = store_with(client, 1)
    grant = store.acquire(Holder("run-1"), timeout_s=0, wait=False)
    epoch, generation, _ = grant.token.split(":")
    forged = f"{epoch}:{generation}:{'0' * 16}"
    before = dump_state(client, "unit")
    with pytest.raises(LeaseNotOwned):
        store.release(grant.name, forged)
    with pytest.raises(LeaseNotOwned):
        store.renew(grant.name, forged)
    with pytest.raises(LeaseLost, match="epoch"):
        store.renew(grant.name, f"{'f' * 16}:{generation}:{'0' * 16}")
    assert dump_state(client, "unit") == before, "a rejected operation must leave the keys byte-identical"
    assert store.renew(grant.name, grant.token) > 0


def test_renew_extends_the_lease_for_the_current_token(client: redis.Redis) -> None:
    store = store_with(client, 1, lease_ttl_s=30)
    grant = store.acquire(Holder("run-1"), timeout_s=0, wait=False)
    expires = store.renew(grant.name, grant.token)
    assert grant.expires_ms <= expires <= grant.cap_ms


def test_acquire_before_any_container_is_registered_says_so(client: redis.Redis) -> None:
    store = LeaseStore(client, "empty")
    with pytest.raises(PoolNotReady, match="supervise"):
        store.acquire(Holder("run-1"), timeout_s=0)


def test_an_unregistered_pool_fails_after_a_short_grace_not_the_whole_timeout(client: redis.Redis) -> None:
    clock = ManualClock()
    store = LeaseStore(client, "empty", clock=clock)
    started = clock.monotonic()
    with pytest.raises(PoolNotReady, match=r"no supervisor has registered it .* cinnamon:\{empty\}:meta"):
        store.acquire(Holder("run-1"), timeout_s=300)
    assert clock.monotonic() - started == pytest.approx(NOT_READY_GRACE_S), "waited past the grace for an unregistered pool"


def test_an_acquire_that_began_before_the_supervisor_registered_is_granted(client: redis.Redis) -> None:
    class SupervisorArrives(ManualClock):
        """The supervisor registers its first container while the acquire waits out the grace."""

        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            if self.monotonic() - 1000.0 >= 2.0 and not client.exists(PoolKeys("late").meta):
                store_with(client, 1, pool="late")

    store = LeaseStore(client, "late", clock=SupervisorArrives())
    assert store.acquire(Holder("run-1"), timeout_s=300).name == "container-001"


def test_infra_errors_count_and_the_threshold_sends_the_container_to_restart(client: redis.Redis) -> None:
    store = store_with(client, 1, error_threshold=3)
    outcomes = [Outcome.INFRA_ERROR, Outcome.TEST_FAILED, Outcome.INFRA_ERROR, Outcome.OK, Outcome.INFRA_ERROR, Outcome.INFRA_ERROR]
    counts = []
    for outcome in outcomes:
        grant = store.acquire(Holder("run"), timeout_s=0, wait=False)
        store.release(grant.name, grant.token, outcome)
        counts.append(store.snapshot().containers[grant.name].error_count)
    assert counts == [1, 1, 2, 0, 1, 2], "test failures must not count; success must reset"
    grant = store.acquire(Holder("run"), timeout_s=0, wait=False)
    assert store.release(grant.name, grant.token, Outcome.INFRA_ERROR) == "restarting"
    assert store.snapshot().containers[grant.name].state is ContainerState.RESTARTING
    with pytest.raises(PoolExhausted):
        store.acquire(Holder("run"), timeout_s=0, wait=False)


def test_a_release_hands_the_container_to_the_oldest_waiter(client: redis.Redis) -> None:
    store = store_with(client, 1)
    holder = store.acquire(Holder("holder"), timeout_s=0, wait=False)
    tickets = ["a" * 32, "b" * 32]
    for ticket, run in zip(tickets, ["first", "second"], strict=True):
        reply = store._run(store_op("acquire"), ticket, _request(run), 10_000, "wait")
        assert reply[0] == "WAIT"
    assert store.snapshot().waiting == 2
    assert store.release(holder.name, holder.token) == "handed"
    woken = client.lpop(store.keys.wake(tickets[0]))
    assert woken is not None and b'"test_run_id":"first"' in woken, "the oldest waiter must be woken with its grant"
    assert client.lpop(store.keys.wake(tickets[1])) is None, "only the oldest waiter is woken"
    reply = store._run(store_op("acquire"), tickets[0], _request("first"), 10_000, "wait")
    assert reply[0] == "GRANTED" and '"test_run_id":"first"' in reply[1]


def test_deregister_revokes_the_lease_and_its_holder_learns_on_renewal(client: redis.Redis) -> None:
    store = store_with(client, 1)
    grant = store.acquire(Holder("run-1"), timeout_s=0, wait=False)
    assert store.deregister(grant.name, "container vanished")
    with pytest.raises(LeaseLost):
        store.renew(grant.name, grant.token)
    assert store.snapshot().containers == {}


def test_re_registering_a_name_keeps_its_state_until_offered(client: redis.Redis) -> None:
    store = store_with(client, 1)
    store.set_state("container-001", ContainerState.STARTING, "restart")
    assert store.snapshot().free == []
    store.register(record(1))
    assert store.snapshot().free == ["container-001"]


def test_a_record_written_without_a_state_still_moves_and_its_event_says_from_nothing(client: redis.Redis) -> None:
    """A record not written by the scripts may lack "state": moving it writes a state event whose
    'from' is empty (a nil there made XADD fail and took the whole script with it)."""
    store = store_with(client, 1)
    keys = PoolKeys("unit")
    written = json.loads(client.hget(keys.containers, "container-001"))  # type: ignore[arg-type]
    del written["state"]
    client.hset(keys.containers, "container-001", json.dumps(written))
    assert store.set_state("container-001", ContainerState.RESTARTING, "operator") == "restarting"
    moved = decode.event("-", stream_entries(client, keys.events, b"state")[-1])
    assert (moved.text("from"), moved.text("to"), moved.text("reason")) == ("", "restarting", "operator")


def store_op(name: str) -> Op:
    return Op(name)


def _request(run: str) -> str:
    return json.dumps({"test_run_id": run, "job_id": "", "worker": "", "ttl_ms": 30000, "cap_ms": 1800000, "random": "0" * 16})


def test_pool_statistics_from_the_event_stream(client: redis.Redis) -> None:
    from cinnamon_pool.config import PoolConfig
    from cinnamon_pool.pool import ContainerPool

    store = store_with(client, 2)
    for outcome in (Outcome.OK, Outcome.INFRA_ERROR, Outcome.OK, Outcome.OK):
        grant = store.acquire(Holder("run"), timeout_s=0, wait=False)
        store.release(grant.name, grant.token, outcome)
    held = store.acquire(Holder("still-running"), timeout_s=0, wait=False)
    stats = ContainerPool(PoolConfig.from_tables({"pool": {"name": "unit"}}), client=client).stats()
    assert stats["jobs_per_hour"] == 4.0 and stats["infra_error_share"] == 0.25
    assert stats["wait_p50_s"] == 0.0 and stats["utilization"] == 0.5
    assert held.name


def test_status_json_keeps_the_documented_contract(fake_redis: redis.Redis) -> None:
    from cinnamon_pool.config import PoolConfig
    from cinnamon_pool.pool import ContainerPool

    store = store_with(fake_redis, 2)
    grant = store.acquire(Holder("run-7"), timeout_s=0, wait=False)
    status = ContainerPool(PoolConfig.from_tables({"pool": {"name": "unit"}}), client=fake_redis).status()
    assert {"pool", "total", "available", "allocated", "restarting", "unhealthy", "waiting", "containers"} <= set(status)
    assert (status["pool"], status["total"], status["available"], status["allocated"], status["waiting"]) == ("unit", 2, 1, 1, 0)
    entry = next(c for c in status["containers"] if c["name"] == grant.name)
    keys = {"name", "container_id", "state", "endpoint", "test_run_id", "memory_mb", "error_count", "restarts"}
    assert keys <= set(entry) and entry["test_run_id"] == "run-7" and entry["state"] == "allocated"


def test_every_script_gets_its_keys_in_the_one_generated_order() -> None:
    import re

    from cinnamon_pool.keys import SCRIPT_KEYS
    from cinnamon_pool.lease.scripts import source

    keys = PoolKeys("unit").script_keys("host-a")
    assert keys == ["cinnamon:{unit}:", "cinnamon:{unit}:leader:host-a"], "two keys, both in the pool's hash slot"
    names = {lua: getattr(PoolKeys("unit"), attribute) for lua, attribute in SCRIPT_KEYS if attribute != "leader"}
    for op in Op:
        derived = re.findall(r"^local (K_[A-Z_]+) = KEYS\[1\] \.\. '([a-z_:]+)'$", source(op), flags=re.MULTILINE)
        assert {lua: keys[0] + suffix for lua, suffix in derived} == names, op
        assert re.findall(r"^local (K_[A-Z_]+) = KEYS\[2\]", source(op), flags=re.MULTILINE) == ["K_LEADER"], op
        assert "KEYS[" not in source(op).split("-- ===== ")[1], f"{op}.lua must use the generated names, not KEYS[i]"


def test_every_lua_script_opens_with_its_contract() -> None:
    """Each script file names itself and says what it is for, its KEYS, its ARGV and what it
    returns, in its opening comment (as BullMQ's scripts do); no script is written inline."""
    folder = Path(cinnamon_pool.__file__).parent / "lease" / "lua"
    scripts = [path for path in [*folder.glob("*.lua"), *(folder / "own").glob("*.lua")] if path.name != "_lib.lua"]
    assert len(scripts) == len(Op) + len(Own)
    for path in scripts:
        header = [line for line in path.read_text().splitlines() if line.startswith("--")]
        assert header[0].startswith(f"-- {path.name}: "), path.name
        assert any(line.startswith("-- KEYS") for line in header) and any(line.startswith("-- Returns") for line in header), path.name
    inline = [p for p in (folder.parent.parent).rglob("*.py") if "redis.call(" in p.read_text()]
    assert inline == [], "Lua belongs in lease/lua/"
