"""Observe: one read-only pass over the engine, the lease store and the containers themselves.

It writes nothing to Redis and changes nothing in Docker. Every container it reads from or
probes is one the engine listed with the pool's labels; a record's container id is used only
after it matched such a container, and endpoints are built from the engine's port mapping, not
taken from a record.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cinnamon_pool.clock import Clock
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.health import ProbeResult
from cinnamon_pool.lease.replication import Lineage
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import ContainerState, PoolSnapshot, local_slot
from cinnamon_pool.runtime.base import ContainerRuntime, ObservedContainer
from cinnamon_pool.supervisor.reconcile import Observation, needs_probe
from cinnamon_pool.supervisor.rules import Probe
from cinnamon_pool.supervisor.state import SupervisorState

Prober = Callable[[str, float], ProbeResult]


@dataclass(frozen=True)
class World:
    """Everything one tick saw."""

    observation: Observation
    snapshot: PoolSnapshot
    memory_mb: dict[str, float]  # by container name, running registered containers only
    cpu_seconds: dict[str, float]  # the cgroup CPU counter, by container name (as memory)
    processes: dict[str, int]  # free containers only (the leftover-browser rule reads these)
    probes: dict[str, Probe]  # health probes that were due this tick
    live_hosts: frozenset[str] = frozenset()  # the pool's other hosts whose supervisor is alive (all, unwatched)
    held: dict[str, frozenset[str]] = field(default_factory=dict)  # free container -> sessions its gateway holds (keeper, prepared)
    size_request: bytes | str | None = None  # `cinnamon-pool scale N` for this host, as Redis keeps it
    gateway_prepares: bool = True  # this host's gateway prepares sessions now (read while a container waits for it)


class Observer:
    def __init__(
        self,
        config: PoolConfig,
        store: LeaseStore,
        runtime: ContainerRuntime,
        probes: ThreadPoolExecutor,
        *,
        readiness: Prober,
        liveness: Prober,
        clock: Clock,
        watch_hosts: bool = False,
    ) -> None:
        """``watch_hosts``: look up which other hosts' supervisors are alive (their leader keys);
        only meaningful where supervisors are elected, as ``supervise`` always is."""
        self.config, self.store, self.runtime, self.clock = config, store, runtime, clock
        self.pool = config.pool.name
        self._probes, self._readiness, self._liveness = probes, readiness, liveness
        self._watch_hosts = watch_hosts

    def observe(self, state: SupervisorState) -> World:
        containers = self.runtime.list(self.pool)
        snapshot = self.store.snapshot()
        records = {name: rec for name, rec in snapshot.containers.items() if rec.host == self.runtime.host}
        pool = self.config.pool
        stored = snapshot.desired.get(self.runtime.host, pool.initial_size)
        size = max(pool.min_size, min(pool.max_size, stored))  # the configuration may have changed
        host, slot_base = self.runtime.host, state.slot_base or 0
        base = Observation(self.pool, host, containers, records, {}, size, snapshot.draining, slot_base)
        timeout = self.config.rules.health_timeout_s
        starting = needs_probe(base)
        ready = dict(
            zip(
                (c.container_id for c in starting),
                self._probes.map(lambda c: self._readiness(self.endpoint(c), timeout).ok, starting),
                strict=True,
            )
        )
        running = {c.container_id: c for c in containers if c.running and c.belongs_to(self.pool, host)}
        serving = {name: running[rec.container_id] for name, rec in records.items() if rec.container_id in running}
        memory: dict[str, float] = {}
        cpu: dict[str, float] = {}
        processes: dict[str, int] = {}
        for name, container in serving.items():
            reading = self.runtime.memory_mb(container.container_id)
            if reading is not None:
                memory[name] = reading
            used = self.runtime.cpu_seconds(container.container_id)
            if used is not None:
                cpu[name] = used
            if records[name].state is ContainerState.AVAILABLE:
                count = self.runtime.process_count(container.container_id)  # (docker top when cgroups are hidden)
                if count is not None:
                    processes[name] = count
        observation = Observation(self.pool, host, containers, records, ready, size, snapshot.draining, slot_base)
        others = sorted({record.host for record in snapshot.containers.values()} - {host})
        live = frozenset(self.store.live_hosts(others)) if others and self._watch_hosts else frozenset(others)
        held = (
            self.store.held_sessions({name: (records[name].container_id, records[name].restarts) for name in processes})
            if processes
            else {}
        )
        preparing = any(record.state is ContainerState.PREPARING for record in records.values())
        prepares = bool(self.store.preparing_hosts([host])) if preparing else True
        return World(
            observation,
            snapshot,
            memory,
            cpu,
            processes,
            self._health(state, serving),
            live,
            held,
            self.store.size_request(host),
            prepares,
        )

    def lineage(self) -> Lineage | None:
        """Redis's replication history now (None: INFO is not allowed, the check is off)."""
        return self.store.lineage()

    def _health(self, state: SupervisorState, serving: dict[str, ObservedContainer]) -> dict[str, Probe]:
        """Probe the serving containers whose interval is due, in parallel, each waiting
        ``health_timeout_s`` for its answer (the rules restart one that gives none in time)."""
        now, interval = self.clock.monotonic(), self.config.rules.health_interval_s
        due = [name for name in sorted(serving) if now - state.probed_at.get(name, float("-inf")) >= interval]
        timeout = self.config.rules.health_timeout_s
        results = self._probes.map(lambda name: self._liveness(self.endpoint(serving[name]), timeout), due)
        return {name: Probe(r.ok, r.seconds, r.detail, r.timed_out) for name, r in zip(due, results, strict=True)}

    def endpoint(self, container: ObservedContainer) -> str:
        """The container's MCP URL on this host, from the engine's port mapping (or the slot's
        configured port while the engine has not reported one)."""
        port = container.host_port or self.config.container.host_ports[local_slot(container.slot or 1) - 1]
        return f"http://127.0.0.1:{port}/mcp"
