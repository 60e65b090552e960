"""Plan: observations of Docker and the lease store in, actions out. Pure: no I/O, no clock.

Level-triggered: the plan depends only on what is true now, so running it twice on the same
observation gives the same actions, and a missed event only delays a correction by one tick.
"""

from __future__ import annotations

import dataclasses
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
    restarts: int = 0  # the record's count: one more after a recycle in place, 0 for a new container


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
    error_count: int = 0  # the record's, for the log
    started_at: float = 0.0  # unix time the container started (0: unknown)


@dataclass(frozen=True)
class Deregister:
    name: str
    reason: str
    untrusted: bool = False  # the record named a container Docker does not report: an error to log


@dataclass(frozen=True)
class RemoveOrphan:
    container_id: str
    reason: str


@dataclass(frozen=True)
class Retire:
    """Take an unleased container out of the pool for good (above the desired size, or drained).
    ``container_id`` is always one the engine reported with the pool's labels."""

    slot: int
    name: str | None
    container_id: str
    reason: str


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
    slot_base: int = 0  # this host's slots are slot_base+1 .. slot_base+size (see model.SLOTS_PER_HOST)


def needs_probe(observation: Observation) -> list[ObservedContainer]:
    """Running containers whose readiness decides the plan: unregistered or starting ones."""
    out = []
    by_id = {record.container_id: record for record in observation.records.values()}
    for container in observation.containers:
        if not container.running or not container.belongs_to(observation.pool, observation.host):
            continue
        record = by_id.get(container.container_id)
        if record is None or record.state is ContainerState.STARTING:
            out.append(container)
    return out


def plan(observation: Observation) -> list[Action]:
    """Actions that make this host match the observation. Every container id in an action comes
    from ``observation.containers`` (what Docker reported with the pool's labels), never from a
    record: a record naming any other container is dropped (``Deregister(untrusted=True)``)."""
    if observation.draining:
        return _plan_drain(observation)
    ours = [c for c in observation.containers if c.belongs_to(observation.pool, observation.host)]
    observed_ids = {c.container_id for c in ours}
    actions: list[Action] = []
    records = dict(observation.records)
    for name, untrusted in sorted(observation.records.items()):
        if untrusted.container_id not in observed_ids:
            del records[name]
            reason = f"the record names container {untrusted.container_id[:12]}, which Docker does not report for this pool"
            actions.append(Deregister(name, reason, untrusted=True))
    trusted = dataclasses.replace(observation, containers=ours, records=records)
    by_slot: dict[int, list[ObservedContainer]] = {}
    for container in ours:
        by_slot.setdefault(container.slot or 0, []).append(container)

    first = observation.slot_base + 1
    for slot in range(first, first + observation.size):
        actions.extend(_plan_slot(trusted, slot, by_slot.pop(slot, [])))
    by_id = {record.container_id: record for record in records.values()}
    for slot, extras in sorted(by_slot.items()):
        for container in extras:
            held = by_id.get(container.container_id)
            if not container.running:
                if held is not None:
                    actions.append(Deregister(held.name, f"container {container.status}"))
                actions.append(RemoveOrphan(container.container_id, f"container {container.status} above the desired size"))
            elif held is None:
                actions.append(RemoveOrphan(container.container_id, f"slot {slot} is outside the pool size {observation.size}"))
            elif held.state not in {ContainerState.ALLOCATED, ContainerState.DRAINING}:
                reason = f"slot {slot} is above the desired size {observation.size}"
                actions.append(Retire(slot, held.name, container.container_id, reason))
            # a leased container above the size stays until its job releases it
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
        reason = record.reason or "recycle before serving again"
        actions.append(Recycle(name, slot, current.container_id, reason, record.error_count, record.started_at or current.started_at))
    elif record.state is ContainerState.UNHEALTHY:
        actions.append(Deregister(name, "unhealthy"))
        actions.append(Replace(slot, current.container_id, "unhealthy"))
    elif record.state is ContainerState.STARTING and observation.ready.get(current.container_id):
        actions.append(Register(slot, current, restarts=record.restarts + 1))
    return actions


def _plan_drain(observation: Observation) -> list[Action]:
    """Drained: no new containers; each one goes as soon as it holds no lease."""
    by_id = {record.container_id: record for record in observation.records.values()}
    actions: list[Action] = []
    for container in observation.containers:
        if not container.belongs_to(observation.pool, observation.host):
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
) -> tuple[int, str]:
    """The host's next desired size and why: grow by the waiting acquirers when nothing is free;
    shrink by one when the highest slot sat idle for ``idle_shrink_s`` (the plan then retires it,
    only while it is free); never within the cool-down."""
    if observation.draining or since_last_change_s < policy.cooldown_s:
        return size, ""
    if waiting > 0 and not free_since_ms and size < policy.max_size:
        return min(policy.max_size, size + waiting), f"{waiting} job(s) waiting and none free"
    if size > policy.min_size:
        name = container_name(observation.slot_base + size)
        idle_since = free_since_ms.get(name)
        if name in observation.records and idle_since is not None and now_ms - idle_since >= policy.idle_shrink_s * 1000:
            return size - 1, f"{name} idle for {(now_ms - idle_since) / 1000:.0f} s"
    return size, ""
