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


@dataclass(frozen=True)
class Retire:
    """Take an unleased container out of the pool for good (scale-down, drain)."""

    slot: int
    name: str | None
    container_id: str
    reason: str
    shrink: bool = False  # scale-down (the pool's size drops) rather than drain (size kept)


Action = Create | Register | Replace | Recycle | Deregister | RemoveOrphan | Retire


@dataclass(frozen=True)
class Observation:
    pool: str
    host: str
    containers: Sequence[ObservedContainer]  # Docker's containers carrying the pool label
    records: Mapping[str, ContainerRecord]  # the lease store's records for this host
    ready: Mapping[str, bool]  # container id -> readiness probe passed (only for those probed)
    size: int  # how many slots this host should serve
    draining: bool = False


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
    if observation.draining:
        return _plan_drain(observation)
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


def _plan_drain(observation: Observation) -> list[Action]:
    """Drained: no new containers; each one goes as soon as it holds no lease."""
    by_id = {record.container_id: record for record in observation.records.values()}
    actions: list[Action] = []
    for container in observation.containers:
        if not container.belongs_to(observation.pool):
            continue
        record = by_id.get(container.container_id)
        if record is not None and record.state in {ContainerState.ALLOCATED, ContainerState.DRAINING}:
            continue
        actions.append(Retire(container.slot or 0, record.name if record else None, container.container_id, "pool drained"))
    return actions


@dataclass(frozen=True)
class ScalePolicy:
    min_size: int
    max_size: int
    idle_shrink_s: float
    cooldown_s: float


def scale(
    size: int,
    observation: Observation,
    policy: ScalePolicy,
    waiting: int,
    free_since_ms: Mapping[str, int],
    now_ms: int,
    since_last_change_s: float,
) -> tuple[int, Action | None]:
    """The pool's next size: grow by the waiting acquirers when nothing is free, shrink the
    highest slot after it sat idle for ``idle_shrink_s``; never within the cool-down."""
    if observation.draining or since_last_change_s < policy.cooldown_s:
        return size, None
    if waiting > 0 and not free_since_ms and size < policy.max_size:
        return min(policy.max_size, size + waiting), None
    if size > policy.min_size:
        name = container_name(size)
        record = observation.records.get(name)
        idle_since = free_since_ms.get(name)
        if record is not None and idle_since is not None and now_ms - idle_since >= policy.idle_shrink_s * 1000:
            return size, Retire(size, name, record.container_id, f"idle for {(now_ms - idle_since) / 1000:.0f} s", shrink=True)
    return size, None
