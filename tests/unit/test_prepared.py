"""Prepared sessions, the Redis side: a release waits in 'preparing' until its gateway offers it
(prepared.lua), the supervisor offers it after the time-out, the canary's residue restarts it, and
the leftover-process rule judges a container against the baseline it has with the gateway's
sessions. The gateway's own behaviour, with real playwright-mcp, is in
tests/e2e/test_prepared_sessions.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import fakeredis
import pytest

from cinnamon_pool import decode
from cinnamon_pool.clock import ManualClock
from cinnamon_pool.config import idle_timeout_s
from cinnamon_pool.errors import PoolExhausted
from cinnamon_pool.gateway.proxy import initialize_request
from cinnamon_pool.lease.gatewayside import GatewayStore
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.logs.format import parse
from cinnamon_pool.model import ContainerRecord, ContainerState, HeldSession, Holder
from cinnamon_pool.supervisor.rules import find_inconsistent, find_overdue
from cinnamon_pool.tokens import fingerprint
from tests.fakes import FakeRuntime
from tests.unit.test_supervisor_restart import supervisor


def ready_pool(tmp_path: Path, **rules: float):  # type: ignore[no-untyped-def]
    client, runtime, clock = fakeredis.FakeRedis(), FakeRuntime(), ManualClock()
    boss = supervisor(tmp_path, client, runtime, clock, **rules)
    boss.tick(), boss.tick()
    store = LeaseStore(client, "qa")
    client.set(store.keys.preparer(runtime.host), "gateway-test", px=600_000)  # this host's gateway prepares
    return client, runtime, clock, boss, store


def test_a_release_with_prepare_waits_until_its_gateway_offers_it(tmp_path: Path) -> None:
    _client, _runtime, _clock, _boss, store = ready_pool(tmp_path)
    grants = [store.acquire(Holder(f"run-{i}"), timeout_s=0, wait=False) for i in (1, 2)]
    first = grants[0]
    assert store.release(first.name, first.token) == "preparing"
    snapshot = store.snapshot()
    assert snapshot.containers[first.name].state is ContainerState.PREPARING
    assert first.name not in snapshot.free_since_ms and first.name not in snapshot.leases
    with pytest.raises(PoolExhausted):
        store.acquire(Holder("run-3"), timeout_s=0, wait=False)

    assert store.prepared(first.name, "0123456789abcdef:1:0123456789abcdef", "ok") == "noop", "another lease's preparation"
    assert store.prepared(first.name, fingerprint(first.token), "ok", seconds=1.2) == "available"
    assert store.acquire(Holder("run-3"), timeout_s=0, wait=False).name == first.name
    assert store.prepared(first.name, fingerprint(first.token), "ok") == "noop", "offered once"


def test_residue_found_while_preparing_restarts_the_container(tmp_path: Path) -> None:
    _client, _runtime, _clock, boss, store = ready_pool(tmp_path)
    grant = store.acquire(Holder("run-1"), timeout_s=0, wait=False)
    store.release(grant.name, grant.token)
    assert store.prepared(grant.name, fingerprint(grant.token), "residue", "cookies=1") == "restarting"
    record = store.snapshot().containers[grant.name]
    assert record.state is ContainerState.RESTARTING and record.reason == "residue: cookies=1"
    boss.tick()
    restarts = [r for r in pool_records(tmp_path) if r.action == "CONTAINER_RESTART"]
    assert [(r.detail("Reason"), r.detail("Detail")) for r in restarts] == [("residue", "residue: cookies=1")], "restarted, and said why"


def released_while_preparing(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A pool whose container-001 was just released and waits for its gateway."""
    client, runtime, clock, boss, store = ready_pool(tmp_path)
    grant = store.acquire(Holder("run-1"), timeout_s=0, wait=False)
    assert store.release(grant.name, grant.token) == "preparing"
    boss.tick()
    return client, runtime, clock, boss, store, grant


def test_the_supervisor_offers_a_container_its_gateway_did_not_prepare_in_time(tmp_path: Path) -> None:
    _client, _runtime, clock, boss, store, grant = released_while_preparing(tmp_path)
    assert store.snapshot().containers[grant.name].state is ContainerState.PREPARING
    clock.advance(boss.config.gateway.prepare_timeout_s - 1)
    boss.tick()
    assert store.snapshot().containers[grant.name].state is ContainerState.PREPARING
    clock.advance(2)
    boss.tick()
    assert store.snapshot().containers[grant.name].state is ContainerState.AVAILABLE
    assert [r.action for r in pool_records(tmp_path)].count("PREPARE_TIMEOUT") == 1


def test_a_supervisor_restarted_while_a_container_is_preparing_still_offers_it(tmp_path: Path) -> None:
    client, runtime, clock, _boss, store, grant = released_while_preparing(tmp_path)
    successor = supervisor(tmp_path, client, runtime, clock)
    successor.tick()
    clock.advance(successor.config.gateway.prepare_timeout_s + 1)
    successor.tick()
    assert store.snapshot().containers[grant.name].state is ContainerState.AVAILABLE


def test_without_a_live_gateway_a_release_goes_straight_back_and_a_preparing_one_is_offered_at_once(tmp_path: Path) -> None:
    client, runtime, clock, boss, store = ready_pool(tmp_path)
    grant = store.acquire(Holder("run-1"), timeout_s=0, wait=False)
    store.release(grant.name, grant.token)
    client.delete(store.keys.preparer(runtime.host))  # the gateway stopped while preparing
    boss.tick()
    clock.advance(0.5)
    boss.tick()
    assert store.snapshot().containers[grant.name].state is ContainerState.AVAILABLE, "not held for the 20 s time-out"
    again = store.acquire(Holder("run-2"), timeout_s=0, wait=False)
    assert store.release(again.name, again.token) == "available", "no gateway prepares: no waiting"


def test_a_container_preparing_but_free_or_leased_is_inconsistent_and_restarts() -> None:
    record = ContainerRecord("container-001", "c" * 64, 1, "h", "http://127.0.0.1:1/mcp", ContainerState.PREPARING)
    assert find_inconsistent({"container-001": record}, {"container-001"}, set(), "e")[0].state is ContainerState.RESTARTING
    assert find_inconsistent({"container-001": record}, set(), {"container-001"}, "e")[0].state is ContainerState.RESTARTING
    assert find_inconsistent({"container-001": record}, set(), set(), "e") == []
    assert find_overdue({"container-001": record}, {"container-001": 21.0}, 20.0) == ["container-001"]
    assert find_overdue({"container-001": record}, {"container-001": 19.0}, 20.0) == []


def hold(client: fakeredis.FakeRedis, store: LeaseStore, name: str, container_id: str, *kinds: str) -> None:
    for kind in kinds:
        session = HeldSession(kind, name, container_id, f"{kind}-session", {"protocolVersion": "2025-11-25"}, 1)
        client.hset(store.keys.sessions, session.field, session.to_json())


def test_the_leftover_rule_learns_the_baseline_with_the_gateways_sessions_and_still_catches_a_leftover(tmp_path: Path) -> None:
    client, runtime, clock, boss, store = ready_pool(tmp_path, residue_processes=3)
    records = store.snapshot().containers
    first, second = (records[name] for name in ("container-001", "container-002"))
    for record in (first, second):
        hold(client, store, record.name, record.container_id, "keeper", "prepared")
        runtime.processes[record.container_id] = 14  # node, a browser, a keeper's page and a prepared page
    for name, since in client.zrange(store.keys.free, 0, -1, withscores=True):  # free for 10 s by Redis' clock
        client.zadd(store.keys.free, {name: since - 10_000})
    clock.advance(5)
    boss.tick()
    snapshot = store.snapshot()
    assert {snapshot.containers[n].state for n in ("container-001", "container-002")} == {ContainerState.AVAILABLE}, (
        "14 processes is this container's baseline with its sessions, not a leftover"
    )
    runtime.processes[first.container_id] = 14 + 4  # a job's browser left behind
    clock.advance(1)
    boss.tick()
    assert store.snapshot().containers["container-001"].reason.startswith("browser left running")
    assert store.snapshot().containers["container-002"].state is ContainerState.AVAILABLE


def test_sessions_held_for_another_container_id_or_garbled_do_not_count(tmp_path: Path) -> None:
    client, _runtime, _clock, _boss, store = ready_pool(tmp_path)
    record = store.snapshot().containers["container-001"]
    hold(client, store, "container-001", "d" * 64, "keeper", "prepared")  # a container since replaced
    client.hset(store.keys.sessions, "prepared|container-002", b"\xff not json")
    held = store.held_sessions({"container-001": (record.container_id, record.restarts), "container-002": ("e" * 64, 0)})
    assert held == {"container-001": frozenset(), "container-002": frozenset()}


@pytest.mark.parametrize(
    ("field", "raw", "why"),
    [
        ("stale|container-001", {"session": "s"}, "is not prepared"),
        ("prepared|container-1", {"session": "s"}, "container"),
        ("prepared|container-001", {"session": "bad id with spaces", "container_id": "c" * 64, "prepared_ms": 1}, "visible ASCII"),
        ("prepared|container-001", {"session": "s", "container_id": "c" * 64, "prepared_ms": 1, "result": []}, "initialize result"),
        ("prepared|container-001", {"session": "s", "container_id": "nope", "prepared_ms": 1}, "docker"),
        ("keeper|container-001", {"session": "s", "container_id": "c" * 64, "prepared_ms": 1, "pad": "x" * 70_000}, "over 65536 bytes"),
    ],
)
def test_a_held_session_that_we_did_not_write_is_refused_with_the_reason(field: str, raw: dict[str, object], why: str) -> None:
    with pytest.raises(decode.BadValue, match=why):
        decode.held_session(field, json.dumps(raw))


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ({"token": "0123456789abcdef:1:0123456789abcdef", "sessions": "s1"}, "list of session ids"),
        ({"token": "0123456789abcdef:1:0123456789abcdef", "sessions": ["ok", "has space"]}, "list of session ids"),
        ({"token": "not a token", "sessions": []}, "fencing token"),
    ],
)
def test_a_leases_sessions_that_a_gateway_did_not_write_are_refused(raw: dict[str, object], why: str) -> None:
    with pytest.raises(decode.BadValue, match=why):
        decode.lease_sessions("container-001", json.dumps(raw))


def test_a_held_session_round_trips() -> None:
    session = HeldSession("prepared", "container-007", "c" * 64, "0b1f-uuid", {"protocolVersion": "2025-11-25"}, 1234)
    assert decode.held_session(session.field, session.to_json()) == session


def test_the_gateway_knows_an_initialize_request_and_nothing_else() -> None:
    body = {"jsonrpc": "2.0", "id": 7, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}}
    assert initialize_request(json.dumps(body).encode()) == (7, "2025-06-18")
    assert initialize_request(json.dumps({**body, "method": "tools/list"}).encode()) is None
    assert initialize_request(json.dumps({k: v for k, v in body.items() if k != "id"}).encode()) is None, "a notification"
    assert initialize_request(b"[1, 2]") is None
    assert initialize_request(b"{not json") is None
    assert initialize_request(json.dumps({**body, "params": "x"}).encode()) == (7, "")


def test_the_servers_idle_timeout_is_read_from_the_command() -> None:
    assert idle_timeout_s(("--headless", "--idle-timeout", "600000")) == 600
    assert idle_timeout_s(("--idle-timeout=90000",)) == 90
    assert idle_timeout_s(("--idle-timeout", "0")) is None
    assert idle_timeout_s(("--headless",)) is None


def pool_records(tmp_path: Path):  # type: ignore[no-untyped-def]
    files = sorted(tmp_path.glob("**/*.log"))
    return [record for path in files for record in parse(path.read_text().splitlines(keepends=True))]


def test_a_prepared_session_is_handed_once_and_never_from_an_earlier_container_or_run_of_the_slot() -> None:
    import asyncio

    import fakeredis.aioredis
    import httpx

    from cinnamon_pool.config import PoolConfig
    from cinnamon_pool.gateway.prepare import Preparer

    async def scenario() -> list[str | None]:
        client = fakeredis.aioredis.FakeRedis()
        config = PoolConfig.from_tables({"pool": {"name": "qa", "max_size": 2}, "container": {"host_port_range": "3990-3991"}})

        async def nothing(_name: str, _token: str) -> None:
            return None

        async with httpx.AsyncClient() as http:
            preparer = Preparer(config, GatewayStore(client, "qa", "h"), http, nothing, lambda *_: None)
            handed: list[str | None] = []
            # replaced (another id); restarted in place (same id, a later start: the server lost its
            # sessions; found by `make bench`, whose memory restarts left dead prepared sessions); live
            for container_id, restarts, session in (("a" * 64, 3, "old"), ("b" * 64, 2, "before-restart"), ("b" * 64, 3, "new")):
                held = HeldSession("prepared", "container-001", container_id, session, {"protocolVersion": "2025-11-25"}, 1, restarts)
                await client.hset(preparer.store.keys.sessions, held.field, held.to_json())
                got = await preparer.take("container-001", "b" * 64, 3, "2025-11-25")
                handed.append(got.session if got else None)
            again = await preparer.take("container-001", "b" * 64, 3, "2025-11-25")
            handed.append(again.session if again else None)
            return handed

    assert asyncio.run(scenario()) == [None, None, "new", None], "not a session of an earlier container or run; the live one once"


def test_a_session_opened_while_the_watcher_reads_the_leases_is_not_ended_as_stale(tmp_path: Path) -> None:
    """Found by a 100-job flat-out run (1-2 jobs refused 'not_your_session'): the lease watcher read
    the current tokens, a new lease opened its session meanwhile, and the watcher then judged that
    session against the old read and ended it."""
    import asyncio

    import fakeredis.aioredis
    import httpx

    from cinnamon_pool.config import PoolConfig
    from cinnamon_pool.gateway import app as gateway_app
    from cinnamon_pool.gateway.app import Gateway
    from cinnamon_pool.gateway.auth import Target
    from cinnamon_pool.logs.writer import DailyLogWriter

    old, new = "0123456789abcdef:1:0123456789abcdef", "0123456789abcdef:2:0123456789abcdef"

    async def scenario() -> set[str]:
        config = PoolConfig.from_tables({"pool": {"name": "qa", "max_size": 2}, "container": {"host_port_range": "3990-3991"}})
        gateway = Gateway(config, GatewayStore(fakeredis.aioredis.FakeRedis(), "qa", "h"), DailyLogWriter(tmp_path))
        reading = asyncio.Event()

        async def current(names: list[str]) -> dict[str, str | None]:
            reading.set()
            await asyncio.sleep(0.05)  # the new lease's initialize is answered during this read
            return dict.fromkeys(names, old)  # as read: the old lease still held it

        gateway.store.current_leases = current  # type: ignore[method-assign]
        async with httpx.AsyncClient() as http:
            gateway._http = http
            await gateway.sessions.add("container-001", old, "old-session")
            watcher = asyncio.create_task(gateway._watch_leases())
            await reading.wait()
            await gateway._opened(Target("container-001", new, "http://127.0.0.1:3990/mcp"), "new-session")
            await asyncio.sleep(gateway_app.WATCH_EVERY_S / 2)
            watcher.cancel()
            return gateway.sessions.open.get(("container-001", new), set())

    assert asyncio.run(scenario()) == {"new-session"}


def test_a_lease_ended_twice_empties_the_output_folder_once_so_the_next_leases_trace_survives(tmp_path: Path) -> None:
    """Found by the soak (a 502 no fault explained): the preparer ended the released lease and
    started the next one's trace; the watcher then ended the same lease again, found nothing, and
    emptied the container's output folder all the same, taking the new trace with it."""
    import asyncio

    import fakeredis.aioredis
    import httpx

    from cinnamon_pool.config import PoolConfig
    from cinnamon_pool.gateway.app import Gateway
    from cinnamon_pool.gateway.traces import OUTPUT, Traces
    from cinnamon_pool.logs.writer import DailyLogWriter

    old = "0123456789abcdef:1:0123456789abcdef"

    async def scenario() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        config = PoolConfig.from_tables({"pool": {"name": "qa", "max_size": 2}, "container": {"host_port_range": "3990-3991"}})
        gateway = Gateway(config, GatewayStore(fakeredis.aioredis.FakeRedis(), "qa", "h"), DailyLogWriter(tmp_path))
        sent: list[tuple[str, str]] = []

        def container(request: httpx.Request) -> httpx.Response:
            sent.append((request.method, request.url.path))
            return httpx.Response(200)

        async with httpx.AsyncClient(transport=httpx.MockTransport(container)) as http:
            gateway._http = http
            gateway.traces = Traces(http, gateway.authorizer.upstream, tmp_path, 1 << 20, lambda *_: None)
            await gateway.sessions.add("container-001", old, "old-session")
            await gateway.end_sessions("container-001", old)  # the preparer, before it prepares the next session
            first = list(sent)
            sent.clear()
            await gateway.end_sessions("container-001", old)  # the watcher, later: the next trace records by now
            return first, sent

    first, late = asyncio.run(scenario())
    assert sorted(first) == [("DELETE", OUTPUT), ("DELETE", "/mcp")], "the lease's session ended and its output emptied"
    assert late == [], "the second end of the same lease sends nothing to the container"


def test_an_offer_that_redis_did_not_answer_is_sent_again_and_the_container_does_not_wait_for_the_time_out(tmp_path: Path) -> None:
    """Found by the --redis-ha soak: the gateway finished preparing while Sentinel was promoting the
    replica, its offer failed, and the container stayed 'preparing' until the supervisor's 20 s
    time-out."""
    import asyncio

    import fakeredis.aioredis
    import httpx
    import redis

    from cinnamon_pool.config import PoolConfig
    from cinnamon_pool.gateway.prepare import Preparer

    server = fakeredis.FakeServer()
    client, runtime, clock = fakeredis.FakeRedis(server=server), FakeRuntime(), ManualClock()
    boss = supervisor(tmp_path, client, runtime, clock, canary_share=0.0)
    boss.tick(), boss.tick()
    store = LeaseStore(client, "qa")
    client.set(store.keys.preparer(runtime.host), "gateway-test", px=600_000)
    grant = store.acquire(Holder("run-1"), timeout_s=0, wait=False)
    record = store.snapshot().containers[grant.name]

    class Container:
        """The upstream of the container: a session opens, the blank page loads."""

        async def initialize(self) -> tuple[str, dict[str, object]]:
            return "next-session", {"protocolVersion": "2025-11-25"}

        async def call_tool(self, _session: str, _tool: object) -> str:
            return ""

        async def end(self, _session: str) -> None:
            return None

    async def scenario() -> list[ContainerState]:
        config = PoolConfig.from_tables({"pool": {"name": "qa", "max_size": 2}, "rules": {"canary_share": 0.0}})

        async def nothing(_name: str, _token: str) -> None:
            return None

        async with httpx.AsyncClient() as http:
            preparer = Preparer(
                config, GatewayStore(fakeredis.aioredis.FakeRedis(server=server), "qa", runtime.host), http, nothing, lambda *_: None
            )
            preparer.upstream = lambda _name: Container()  # type: ignore[assignment,method-assign,return-value]
            keeper = HeldSession("keeper", grant.name, record.container_id, "keeper-session", {}, 1)
            await preparer.store.client.hset(preparer.store.keys.sessions, keeper.field, keeper.to_json())
            preparer.checked_at[keeper.field] = preparer.clock.monotonic()
            offer, failures = preparer.store._offer, [redis.ConnectionError("the primary is gone")]

            async def failing_once(**arguments: Any) -> Any:
                if failures:
                    raise failures.pop()
                return await offer(**arguments)

            preparer.store._offer = failing_once  # type: ignore[assignment]
            assert store.release(grant.name, grant.token) == "preparing"
            states = []
            for _ in range(3):
                await preparer.step()
                await asyncio.gather(*preparer.tasks.values())
                states.append(store.snapshot().containers[grant.name].state)
            return states

    states = asyncio.run(scenario())
    assert states[0] is ContainerState.PREPARING, "the offer failed: still preparing"
    assert states[1:] == [ContainerState.AVAILABLE, ContainerState.AVAILABLE], "offered again by the next round"
    assert json.loads(cast(bytes, client.hget(store.keys.sessions, f"prepared|{grant.name}")))["session"] == "next-session"
