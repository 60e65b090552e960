"""Plan: observations of Docker and the lease store in, actions out. Pure: no I/O, no clock.

Level-triggered: the plan depends only on what is true now, so running it twice on the same
observation gives the same actions, and a missed event only delays a correction by one tick.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cinnamon_pool.model import ContainerRecord, ContainerState, container_name
from cinnamon_pool.runtime.base import ObservedContainer


@dataclass(frozen=True)
class Create:
    slot: int
    reason: str = "missing"


@dataclass(frozen=True)
class Register:
    slot: int
    container: ObservedContainer
    restarted: bool = False


@dataclass(frozen=True)
class Replace:
    """Remove a container that stopped or cannot serve, then create its slot again."""

    slot: int
    container_id: str
    reason: str


@dataclass(frozen=True)
class Recycle:
    """Restart a container in place (same id and endpoint) before it serves again."""

    name: str
    slot: int
    container_id: str
    reason: str


@dataclass(frozen=True)
class Deregister:
    name: str
    reason: str


@dataclass(frozen=True)
class RemoveOrphan:
    container_id: str
    reason: str


Action = Create | Register | Replace | Recycle | Deregister | RemoveOrphan


@dataclass(frozen=True)
class Observation:
    pool: str
    host: str
    containers: Sequence[ObservedContainer]  # Docker's containers carrying the pool label
    records: Mapping[str, ContainerRecord]  # the lease store's records for this host
    ready: Mapping[str, bool]  # container id -> readiness probe passed (only for those probed)
    size: int  # how many slots this host should serve


def needs_probe(observation: Observation) -> list[ObservedContainer]:
    """Running containers whose readiness decides the plan: unregistered or starting ones."""
    out = []
    by_id = {record.container_id: record for record in observation.records.values()}
    for container in observation.containers:
        if not container.running or not container.belongs_to(observation.pool):
            continue
        record = by_id.get(container.container_id)
        if record is None or record.state is ContainerState.STARTING:
            out.append(container)
    return out


def plan(observation: Observation) -> list[Action]:
    actions: list[Action] = []
    ours = [c for c in observation.containers if c.belongs_to(observation.pool)]
    by_slot: dict[int, list[ObservedContainer]] = {}
    for container in ours:
        by_slot.setdefault(container.slot or 0, []).append(container)

    for slot in range(1, observation.size + 1):
        actions.extend(_plan_slot(observation, slot, by_slot.pop(slot, [])))

    for slot, extras in sorted(by_slot.items()):
        for container in extras:
            actions.append(RemoveOrphan(container.container_id, f"slot {slot} is outside the pool size {observation.size}"))
    for name, record in sorted(observation.records.items()):
        if record.slot > observation.size:
            actions.append(Deregister(name, "slot outside the pool size"))
    return actions


def _plan_slot(observation: Observation, slot: int, containers: list[ObservedContainer]) -> list[Action]:
    name = container_name(slot)
    record = observation.records.get(name)
    actions: list[Action] = []
    # One container per slot: keep the registered one, else a running one; the rest are orphans.
    containers = sorted(
        containers,
        key=lambda c: (record is not None and c.container_id == record.container_id, c.running, c.started_at),
        reverse=True,
    )
    for extra in containers[1:]:
        actions.append(RemoveOrphan(extra.container_id, f"second container for slot {slot}"))
    current = containers[0] if containers else None

    if current is None:
        if record is not None:
            actions.append(Deregister(name, "container vanished"))
        actions.append(Create(slot, "missing" if record is None else "vanished"))
        return actions
    if not current.running:
        if record is not None:
            actions.append(Deregister(name, f"container {current.status}"))
        actions.append(Replace(slot, current.container_id, f"container {current.status}"))
        return actions
    if record is None or record.container_id != current.container_id:
        if observation.ready.get(current.container_id):
            actions.append(Register(slot, current))
        return actions
    if record.state is ContainerState.RESTARTING:
        actions.append(Recycle(name, slot, current.container_id, "recycle before serving again"))
    elif record.state is ContainerState.UNHEALTHY:
        actions.append(Deregister(name, "unhealthy"))
        actions.append(Replace(slot, current.container_id, "unhealthy"))
    elif record.state is ContainerState.STARTING and observation.ready.get(current.container_id):
        actions.append(Register(slot, current, restarted=True))
    return actions
