"""Prometheus metrics of the pool, served by the supervisor on ``metrics.port`` (0 = off).

Names follow Prometheus conventions: ``cinnamon_pool_`` prefix, ``_total`` for counters,
``_seconds`` and ``_bytes`` units. Every metric carries the ``pool`` label.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from cinnamon_pool.events import EventKind, LeaseEvent
from cinnamon_pool.model import ContainerState, Outcome, PoolSnapshot

WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300)
PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class PoolMetrics:
    def __init__(self, pool: str, registry: CollectorRegistry | None = None) -> None:
        self.pool = pool
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.containers = Gauge("cinnamon_pool_containers", "Containers per state", ["pool", "state"], registry=r)
        self.memory = Gauge(
            "cinnamon_pool_container_memory_bytes",
            "Memory per container (usage minus inactive file cache)",
            ["pool", "container"],
            registry=r,
        )
        self.cpu = Gauge(
            "cinnamon_pool_container_cpu_percent",
            "CPU use per container, % of one core over the last tick",
            ["pool", "container"],
            registry=r,
        )
        self.allocated_at = Gauge(
            "cinnamon_pool_container_allocated_timestamp_seconds",
            "When the container's current lease began (unix time; absent while free)",
            ["pool", "container"],
            registry=r,
        )
        self.last_cleanup = Gauge(
            "cinnamon_pool_container_last_cleanup_timestamp_seconds",
            "When the container's last job's cleanup ended (unix time)",
            ["pool", "container"],
            registry=r,
        )
        self.jobs = Counter(
            "cinnamon_pool_container_jobs_total",
            "Jobs released per container, by outcome (error rate: infra_error over all)",
            ["pool", "container", "outcome"],
            registry=r,
        )
        self.waiting = Gauge("cinnamon_pool_waiting_acquirers", "Jobs waiting for a container", ["pool"], registry=r)
        self.grants = Counter("cinnamon_pool_leases_granted_total", "Leases granted", ["pool"], registry=r)
        self.releases = Counter("cinnamon_pool_leases_released_total", "Leases released, by outcome", ["pool", "outcome"], registry=r)
        self.wait = Histogram(
            "cinnamon_pool_lease_wait_seconds", "Time a job waited for its container", ["pool"], buckets=WAIT_BUCKETS, registry=r
        )
        self.probe = Histogram("cinnamon_pool_probe_seconds", "Health probe latency", ["pool"], buckets=PROBE_BUCKETS, registry=r)
        self.restarts = Counter("cinnamon_pool_restarts_total", "Container restarts, by reason", ["pool", "reason"], registry=r)
        self.replacements = Counter("cinnamon_pool_replacements_total", "Container replacements, by reason", ["pool", "reason"], registry=r)
        self.errors = Counter("cinnamon_pool_errors_total", "Errors, by kind", ["pool", "kind"], registry=r)
        self.known: frozenset[str] = frozenset()  # the pool's container names, from the last observe_pool

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)

    def observe_pool(self, snapshot: PoolSnapshot, memory_mb: Mapping[str, float], cpu_percent: Mapping[str, float] | None = None) -> None:
        self.known = frozenset(snapshot.containers)  # the only container labels an event may add
        for state in ContainerState:
            self.containers.labels(self.pool, state.value).set(snapshot.count(state))
        self.waiting.labels(self.pool).set(snapshot.waiting)
        self.memory.clear()
        for name, megabytes in memory_mb.items():
            self.memory.labels(self.pool, name).set(megabytes * 1024 * 1024)
        self.cpu.clear()
        for name, percent in (cpu_percent or {}).items():
            self.cpu.labels(self.pool, name).set(percent)
        self.allocated_at.clear()
        for name, lease in snapshot.leases.items():
            self.allocated_at.labels(self.pool, name).set(lease.granted_ms / 1000)
        self.last_cleanup.clear()
        for name, record in snapshot.containers.items():
            if record.last_cleanup_ms:
                self.last_cleanup.labels(self.pool, name).set(record.last_cleanup_ms / 1000)

    def lease_event(self, event: LeaseEvent) -> None:
        if event.kind is EventKind.GRANTED:
            self.grants.labels(self.pool).inc()
            self.wait.labels(self.pool).observe(event.number("wait_ms") / 1000)
        elif event.kind is EventKind.RELEASED:
            outcome = event.text("outcome")
            label = outcome if outcome in set(Outcome) else "other"
            self.releases.labels(self.pool, label).inc()
            # A name read from the stream becomes a label only if it is one of the pool's containers:
            # events written by whoever can write to Redis must not grow the label sets without bound.
            self.jobs.labels(self.pool, event.name if event.name in self.known else "other", label).inc()
            if outcome == Outcome.INFRA_ERROR:
                self.errors.labels(self.pool, "infra_error").inc()


def reason_label(reason: str) -> str:
    """A bounded label value: the reason's first word ('memory 412MB > 400MB' -> 'memory')."""
    word = reason.split(" ", 1)[0].strip(":").lower() if reason else "unknown"
    return word if word.replace("_", "").isalpha() else "other"
