"""The supervisor loop against a fake runtime and fakeredis: what it decides and records."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import fakeredis

from cinnamon_pool.clock import ManualClock
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.errors import RuntimeUnavailable
from cinnamon_pool.health import ProbeResult
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.logs.format import parse
from cinnamon_pool.logs.writer import DailyLogWriter
from cinnamon_pool.model import ContainerState, Holder, Outcome
from cinnamon_pool.runtime.base import ContainerSpec, ObservedContainer
from cinnamon_pool.supervisor.loop import FAST_TICK_S, Supervisor
from tests.fakes import FakeRuntime


def make(
    tmp_path: Path,
    image: str = "cinnamon-pool/fake-mcp:test",
    ready: bool = True,
    store: LeaseStore | None = None,
    runtime: FakeRuntime | None = None,
) -> tuple[Supervisor, FakeRuntime, LeaseStore]:
    config = PoolConfig.from_tables({"pool": {"name": "qa", "initial_size": 2}, "container": {"image": image}})
    store = store or LeaseStore(fakeredis.FakeRedis(), "qa")
    runtime = runtime or FakeRuntime()
    clock = ManualClock()
    supervisor = Supervisor(
        config, store, runtime, DailyLogWriter(tmp_path, clock=clock), clock=clock, probe=lambda url, timeout: ProbeResult(ready, 0.01)
    )
    return supervisor, runtime, store


def records(tmp_path: Path, kind: str) -> list[str]:
    files = sorted((tmp_path / "containers").glob(f"container-{kind}-*.log"))
    return [r.action for f in files for r in parse(f.read_text().splitlines(keepends=True))]


def test_the_egress_rules_are_in_place_before_the_first_container_and_a_host_without_them_starts_none(tmp_path: Path) -> None:
    supervisor, runtime, _store = make(tmp_path)
    supervisor.tick()
    names = [call[0] for call in runtime.calls if call[0] in {"ensure_network", "ensure_egress", "create"}]
    assert names[:3] == ["ensure_network", "ensure_egress", "create"], names

    class NoFirewall(FakeRuntime):
        def ensure_egress(self, network: str, allow: Sequence[str]) -> None:
            raise RuntimeUnavailable("egress rules: iptables: Permission denied (fake)")

    supervisor, runtime, _store = make(tmp_path / "second", runtime=NoFirewall())
    supervisor.tick()
    assert [call for call in runtime.calls if call[0] == "create"] == [], "no container without its firewall"
    errors = (tmp_path / "second" / "containers").glob("container-errors-*.log")
    assert any("iptables: Permission denied" in f.read_text() for f in errors), "said in the errors log"


def test_first_ticks_start_and_register_initial_size(tmp_path: Path) -> None:
    supervisor, runtime, store = make(tmp_path)
    report = supervisor.tick()
    assert [c for c in runtime.calls if c[0] == "create"] == [
        ("create", "cinnamon-qa-container-001"),
        ("create", "cinnamon-qa-container-002"),
    ]
    assert report.pending, "a tick that created containers must ask for a fast next tick"
    supervisor.tick()
    snapshot = store.snapshot()
    assert sorted(snapshot.free) == ["container-001", "container-002"]
    assert {r.endpoint for r in snapshot.containers.values()} == {
        "http://127.0.0.1:8930/qa/container-001/mcp",
        "http://127.0.0.1:8930/qa/container-002/mcp",
    }, "jobs get the gateway's URL for each container"
    assert records(tmp_path, "pool") == ["CONTAINER_STARTED", "CONTAINER_STARTED"]


def test_an_exited_container_is_replaced_and_its_lease_revoked(tmp_path: Path) -> None:
    supervisor, runtime, store = make(tmp_path)
    supervisor.tick(), supervisor.tick()
    grant = store.acquire(Holder("run-1"), timeout_s=0, wait=False)
    runtime.exit(grant.container_id)
    supervisor.tick()
    assert grant.container_id not in runtime.containers
    assert grant.name not in store.snapshot().leases, "the vanished container's lease must be freed"
    supervisor.tick()
    assert store.snapshot().containers[grant.name].container_id != grant.container_id
    assert "CONTAINER_REPLACED" in records(tmp_path, "pool")


def test_lease_events_become_usage_records(tmp_path: Path) -> None:
    supervisor, _runtime, store = make(tmp_path)
    supervisor.tick(), supervisor.tick()
    grant = store.acquire(Holder("run-1"), timeout_s=0, wait=False)
    store.release(grant.name, grant.token, Outcome.INFRA_ERROR)
    supervisor.tick()
    assert records(tmp_path, "usage") == ["ALLOCATED", "RELEASED"]
    assert records(tmp_path, "errors") == ["ERROR_OCCURRED"]
    supervisor.tick()
    assert records(tmp_path, "usage") == ["ALLOCATED", "RELEASED"], "events must be written once"


def test_error_threshold_leads_to_a_restart_in_place(tmp_path: Path) -> None:
    supervisor, runtime, store = make(tmp_path)
    supervisor.tick(), supervisor.tick()
    for _ in range(6):  # grants alternate between the two containers (oldest free first)
        grant = store.acquire(Holder("run"), timeout_s=0, wait=False)
        store.release(grant.name, grant.token, Outcome.INFRA_ERROR)
        if store.snapshot().containers[grant.name].state is ContainerState.RESTARTING:
            break
    supervisor.tick()
    assert ("restart", grant.container_id) in runtime.calls
    supervisor.tick()
    recycled = store.snapshot().containers[grant.name]
    assert recycled.state is ContainerState.AVAILABLE and recycled.error_count == 0 and recycled.restarts == 1
    assert "CONTAINER_RESTART" in records(tmp_path, "pool")


def test_a_missing_image_creates_nothing_and_reports_once(tmp_path: Path, capsys: object) -> None:
    supervisor, runtime, _store = make(tmp_path, image="nowhere/missing:1")
    for _ in range(5):
        report = supervisor.tick()
        assert report.error is not None and "nowhere/missing:1" in report.error
    assert runtime.containers == {}
    assert records(tmp_path, "errors") == ["ERROR_OCCURRED"], "one error record per backoff period, not one per tick"


def test_failing_ticks_back_off_exponentially_up_to_30_s(tmp_path: Path) -> None:
    supervisor, _runtime, _store = make(tmp_path, image="nowhere/missing:1")
    report = supervisor.tick()
    waits = [supervisor.next_wait(report, failures) for failures in range(1, 9)]
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30]
    healthy, _runtime, _store = make(tmp_path / "healthy")
    assert healthy.next_wait(healthy.tick(), 0) == FAST_TICK_S, "containers starting: tick fast"
    healthy.tick()
    assert healthy.next_wait(healthy.tick(), 0) == healthy.config.rules.tick_s, "a settled pool ticks at tick_s"


def test_errors_that_differ_only_by_ids_are_reported_once(tmp_path: Path) -> None:
    supervisor, _runtime, _store = make(tmp_path)
    for container_id in ("a" * 64, "b" * 64, "c" * 64):
        supervisor.journal.error(RuntimeUnavailable(f"docker run: endpoint {container_id}: port is already allocated"))
    assert records(tmp_path, "errors") == ["ERROR_OCCURRED"]


class Crash(BaseException):
    """The supervisor process dies here (SIGKILL): nothing after this line runs."""


class CrashingRuntime(FakeRuntime):
    """Performs the ``crash_after``-th engine change (create, remove, restart), then crashes."""

    def __init__(self, crash_after: int) -> None:
        super().__init__()
        self.crash_after, self.changes = crash_after, 0

    def _changed(self) -> None:
        self.changes += 1
        if self.changes == self.crash_after:
            raise Crash

    def create(self, spec: ContainerSpec) -> ObservedContainer:
        created = super().create(spec)
        self._changed()
        return created

    def remove(self, container_id: str) -> None:
        super().remove(container_id)
        self._changed()

    def restart(self, container_id: str) -> ObservedContainer:
        restarted = super().restart(container_id)
        self._changed()
        return restarted


def crash_scenario(tmp_path: Path, crash_after: int) -> tuple[CrashingRuntime, LeaseStore, bool]:
    """Start a pool, lose a container, fail six jobs (both containers recycled); the supervisor
    dies after its ``crash_after``-th engine change. Returns whether it crashed."""
    runtime = CrashingRuntime(crash_after)
    supervisor, _runtime, store = make(tmp_path, runtime=runtime)
    try:
        for _ in range(3):
            supervisor.tick()
        runtime.exit(store.snapshot().containers["container-001"].container_id)
        for _ in range(3):
            supervisor.tick()
        for _ in range(6):
            grant = store.acquire(Holder("failing"), timeout_s=0, wait=False)
            store.release(grant.name, grant.token, Outcome.INFRA_ERROR)
        for _ in range(3):
            supervisor.tick()
    except Crash:
        return runtime, store, True
    return runtime, store, False


def test_a_supervisor_killed_after_any_engine_change_is_finished_by_the_next_one(tmp_path: Path) -> None:
    runtime, _store, crashed = crash_scenario(tmp_path / "whole", crash_after=0)
    assert not crashed
    changes = runtime.changes
    assert changes >= 6, "creates, a replacement's remove and create, two restarts"
    for crash_after in range(1, changes + 1):
        runtime, store, crashed = crash_scenario(tmp_path / str(crash_after), crash_after)
        assert crashed
        runtime.crash_after = 0
        successor, _runtime, _store = make(tmp_path / f"{crash_after}-next", store=store, runtime=runtime)  # a new process
        for _ in range(4):
            successor.tick()
        slots = sorted(c.labels["cinnamon.slot"] for c in runtime.containers.values())
        snapshot = store.snapshot()
        assert slots == ["1", "2"], f"crash after change {crash_after}: containers {slots}"
        assert {r.container_id for r in snapshot.containers.values()} == set(runtime.containers), f"crash after change {crash_after}"
        assert sorted(snapshot.free) == ["container-001", "container-002"], f"crash after change {crash_after}: {snapshot.containers}"


def test_backing_off_from_an_outage_ends_when_redis_and_docker_answer_again(tmp_path: Path) -> None:
    supervisor, runtime, _store = make(tmp_path)
    runtime.down = True
    report = supervisor.tick()
    assert report.error is not None and report.unreachable, "an engine that does not answer is an outage"
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    started = time.monotonic()
    supervisor._back_off(stop, 30.0, report.unreachable)
    assert time.monotonic() - started >= 1.4, "while Docker is down the back-off goes on (until stopped here)"
    runtime.down = False
    started = time.monotonic()
    supervisor._back_off(threading.Event(), 30.0, report.unreachable)
    assert time.monotonic() - started < 5, "once both answer, the 30 s back-off ends at the next look"
    assert supervisor.tick().error is None
