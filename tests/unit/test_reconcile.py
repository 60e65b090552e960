"""The supervisor's plan as a pure function: plain values in, actions out."""

from __future__ import annotations

from cinnamon_pool.model import ContainerRecord, ContainerState
from cinnamon_pool.runtime.base import ObservedContainer, pool_labels
from cinnamon_pool.supervisor.reconcile import (
    Create,
    Deregister,
    Observation,
    Recycle,
    Register,
    RemoveOrphan,
    Replace,
    Retire,
    needs_probe,
    plan,
)

POOL = "qa"


def container(slot: int, status: str = "running", pool: str = POOL, cid: str | None = None) -> ObservedContainer:
    return ObservedContainer(
        cid or f"{slot:064x}", f"cinnamon-{pool}-container-{slot:03d}", pool_labels(pool, slot, "h"), status, 3000 + slot
    )


def record(slot: int, state: ContainerState = ContainerState.AVAILABLE, cid: str | None = None) -> ContainerRecord:
    return ContainerRecord(f"container-{slot:03d}", cid or f"{slot:064x}", slot, "h", f"http://127.0.0.1:{3000 + slot}/mcp", state)


def observe(
    containers: list[ObservedContainer], records: list[ContainerRecord], size: int = 2, ready: dict[str, bool] | None = None
) -> Observation:
    return Observation(POOL, "h", containers, {r.name: r for r in records}, ready or {}, size)


def test_an_empty_host_creates_every_slot() -> None:
    assert plan(observe([], [])) == [Create(1), Create(2)]


def test_a_healthy_pool_needs_nothing() -> None:
    observation = observe([container(1), container(2)], [record(1), record(2)])
    assert plan(observation) == []
    assert needs_probe(observation) == []


def test_a_running_unregistered_container_is_registered_only_once_ready() -> None:
    fresh = container(1)
    assert plan(observe([fresh, container(2)], [record(2)])) == []
    assert needs_probe(observe([fresh, container(2)], [record(2)])) == [fresh]
    assert plan(observe([fresh, container(2)], [record(2)], ready={fresh.container_id: True})) == [Register(1, fresh)]


def test_a_vanished_container_frees_its_record_and_is_created_again() -> None:
    assert plan(observe([container(2)], [record(1), record(2)])) == [
        Deregister("container-001", f"the record names container {0:012x}, which Docker does not report for this pool", untrusted=True),
        Create(1, "missing"),
    ]


def test_a_record_naming_a_foreign_container_is_dropped_and_docker_is_told_nothing_about_it() -> None:
    foreign = "f" * 64  # running on the host, but without the pool's labels: never listed
    for state in ContainerState:
        actions = plan(observe([container(1), container(2)], [record(1), record(2, state, cid=foreign)], size=2))
        assert foreign not in {getattr(a, "container_id", None) for a in actions}, f"a {state} record reached Docker"
        assert actions[0] == Deregister(
            "container-002", "the record names container ffffffffffff, which Docker does not report for this pool", untrusted=True
        )
    above = plan(observe([container(1)], [record(1), record(3, cid=foreign)], size=1))
    assert [type(a) for a in above] == [Deregister], "a forged record above the desired size is dropped, nothing removed"


def test_slots_above_the_desired_size_are_retired_only_when_free() -> None:
    containers = [container(1), container(2), container(3), container(4)]
    held = [record(1), record(2), record(3, ContainerState.ALLOCATED), record(4, ContainerState.DRAINING)]
    assert plan(observe(containers, held, size=2)) == [], "leased containers above the size stay, records and all"
    freed = [record(1), record(2), record(3), record(4, ContainerState.ALLOCATED)]
    assert plan(observe(containers, freed, size=2)) == [
        Retire(3, "container-003", f"{3:064x}", "slot 3 is above the desired size 2"),
    ]


def test_an_exited_container_is_replaced() -> None:
    dead = container(1, status="exited")
    actions = plan(observe([dead, container(2)], [record(1), record(2)]))
    assert actions == [Deregister("container-001", "container exited"), Replace(1, dead.container_id, "container exited")]


def test_restarting_records_are_recycled_and_re_registered_when_ready() -> None:
    assert plan(observe([container(1), container(2)], [record(1, ContainerState.RESTARTING), record(2)])) == [
        Recycle("container-001", 1, f"{1:064x}", "recycle before serving again")
    ]
    starting = observe([container(1), container(2)], [record(1, ContainerState.STARTING), record(2)], ready={f"{1:064x}": True})
    assert plan(starting) == [Register(1, container(1), restarts=1)]


def test_only_containers_with_the_full_label_set_are_touched() -> None:
    foreign_pool = container(1, pool="other")
    partial = ObservedContainer("e" * 64, "partial", {"cinnamon.pool": POOL}, "running")
    extra = container(5)
    actions = plan(observe([container(1), container(2), foreign_pool, partial, extra], [record(1), record(2)]))
    assert actions == [RemoveOrphan(extra.container_id, "slot 5 is outside the pool size 2")]


def test_two_containers_for_one_slot_keep_the_registered_one() -> None:
    registered, twin = container(1), container(1, cid="f" * 64)
    actions = plan(observe([twin, registered, container(2)], [record(1), record(2)]))
    assert actions == [RemoveOrphan(twin.container_id, "second container for slot 1")]
