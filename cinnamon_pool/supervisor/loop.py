"""The supervisor: observe -> plan -> apply, every tick, and the log files from the event stream.

The only process that talks to Docker. It re-lists the truth every tick (``rules.tick_s``);
Docker events only wake it early, and it ticks fast while a container is starting so a
replacement is registered as soon as its readiness probe passes.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from cinnamon_pool.clock import SYSTEM_CLOCK, Clock
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.errors import CinnamonError, ImageMissing, RuntimeUnavailable
from cinnamon_pool.health import ProbeResult, readiness
from cinnamon_pool.lease.store import LeaseStore, PoolSnapshot
from cinnamon_pool.logs.events import action_record, event_record
from cinnamon_pool.logs.format import LogKind
from cinnamon_pool.logs.writer import DailyLogWriter
from cinnamon_pool.model import ContainerRecord, ContainerState, container_name
from cinnamon_pool.runtime.base import ContainerRuntime, ContainerSpec, ObservedContainer, pool_labels
from cinnamon_pool.supervisor.reconcile import (
    Action,
    Create,
    Deregister,
    Observation,
    Recycle,
    Register,
    RemoveOrphan,
    Replace,
    needs_probe,
    plan,
)

FAST_TICK_S = 0.1
MAX_BACKOFF_S = 30.0
ERROR_REPORT_EVERY_S = 60.0


@dataclass
class TickReport:
    actions: list[Action] = field(default_factory=list)
    pending: bool = False  # something is starting: tick again soon
    error: str | None = None


class Supervisor:
    def __init__(
        self,
        config: PoolConfig,
        store: LeaseStore,
        runtime: ContainerRuntime,
        writer: DailyLogWriter,
        *,
        clock: Clock = SYSTEM_CLOCK,
        probe: Callable[[str, float], ProbeResult] = readiness,
    ) -> None:
        self.config = config
        self.store = store
        self.runtime = runtime
        self.writer = writer
        self.clock = clock
        self.probe = probe
        self.pool = config.pool.name
        self.size = config.pool.initial_size
        self.wake = threading.Event()
        self.epoch: str | None = None
        self._network_ready = False
        self._created_at: dict[int, float] = {}  # slot -> monotonic time of create (startup time)
        self._restart_reasons: dict[str, str] = {}
        self._last_error: tuple[str, float] | None = None
        self._memory: dict[str, float] = {}

    # -- the loop ------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        watcher = threading.Thread(target=self.runtime.watch_events, args=(self.pool, self.wake, stop), daemon=True, name="docker-events")
        watcher.start()
        failures = 0
        while not stop.is_set():
            report = self.tick()
            failures = failures + 1 if report.error else 0
            self.wake.clear()
            self.wake.wait(self.next_wait(report, failures))

    def next_wait(self, report: TickReport, failures: int) -> float:
        """Fast while containers start; exponential backoff (1 s .. 30 s) while ticks fail."""
        if failures:
            return min(MAX_BACKOFF_S, 2.0 ** (failures - 1))
        return FAST_TICK_S if report.pending else self.config.rules.tick_s

    def tick(self) -> TickReport:
        report = TickReport()
        try:
            self.store.ensure_consumer_group()
            self.store.reap()
            observation = self.observe()
            report.actions = plan(observation)
            for action in report.actions:
                self.apply(action)
            report.pending = any(isinstance(a, (Create, Replace, Recycle)) for a in report.actions) or bool(needs_probe(observation))
            self.write_event_logs()
        except (CinnamonError, redis.RedisError) as error:
            report.error = str(error)
            self._report_error(error)
        return report

    # -- observe -------------------------------------------------------------------------
    def observe(self) -> Observation:
        containers = self.runtime.list(self.pool)
        snapshot = self.store.snapshot()
        self._check_epoch(snapshot, containers)
        records = {name: rec for name, rec in snapshot.containers.items() if rec.host == self.runtime.host}
        ready: dict[str, bool] = {}
        base = Observation(self.pool, self.runtime.host, containers, records, {}, self.size)
        for container in needs_probe(base):
            ready[container.container_id] = self.probe(self._endpoint(container), self.config.rules.health_timeout_s).ok
        memory: dict[str, float] = {}
        by_id = {c.container_id: c for c in containers if c.running}
        for name, record in records.items():
            if record.container_id in by_id:
                reading = self.runtime.memory_mb(record.container_id)
                if reading is not None:
                    memory[name] = reading
        self.store.record_memory(memory)
        self._memory = memory
        return Observation(self.pool, self.runtime.host, containers, records, ready, self.size)

    def _check_epoch(self, snapshot: PoolSnapshot, containers: list[ObservedContainer]) -> None:
        """Redis lost the pool's state: every container may hold a job's leftovers, so recycle all."""
        if self.epoch is not None and snapshot.epoch != self.epoch:
            self._log(
                LogKind.ERRORS,
                "pool",
                "ERROR_OCCURRED",
                [("Error", "redis lost the pool state (epoch changed)"), ("Action", "recycling every container")],
                level="ERROR",
            )
            for container in containers:
                if container.running and container.belongs_to(self.pool):
                    self.runtime.restart(container.container_id)
        self.epoch = snapshot.epoch

    # -- apply ---------------------------------------------------------------------------
    def apply(self, action: Action) -> None:
        if isinstance(action, Create):
            self._create(action.slot)
        elif isinstance(action, Replace):
            self.runtime.remove(action.container_id)
            self._log(
                LogKind.POOL,
                container_name(action.slot),
                "CONTAINER_REPLACED",
                [("Reason", action.reason), ("Old Container", action.container_id[:12])],
                level="WARN",
            )
            self._create(action.slot)
        elif isinstance(action, Register):
            self._register(action)
        elif isinstance(action, Recycle):
            reason = self._restart_reasons.pop(action.name, action.reason)
            self.runtime.restart(action.container_id)
            self.store.set_state(action.name, ContainerState.STARTING, f"restart: {reason}")
            self._created_at[action.slot] = self.clock.monotonic()
            self._log(LogKind.POOL, action.name, "CONTAINER_RESTART", [("Reason", reason)], level="WARN")
        elif isinstance(action, Deregister):
            self.store.deregister(action.name, action.reason)
        elif isinstance(action, RemoveOrphan):
            self.runtime.remove(action.container_id)
            self._log(
                LogKind.POOL, "pool", "ORPHAN_REMOVED", [("Container", action.container_id[:12]), ("Reason", action.reason)], level="WARN"
            )

    def _create(self, slot: int) -> None:
        template = self.config.container
        if not self._network_ready:
            self.runtime.ensure_network(template.network)
            self._network_ready = True
        name = container_name(slot)
        spec = ContainerSpec(
            pool=self.pool,
            slot=slot,
            docker_name=f"cinnamon-{self.pool}-{name}",
            host_port=template.host_ports[slot - 1],
            template=template,
            labels=pool_labels(self.pool, slot),
        )
        self.runtime.create(spec)
        self._created_at[slot] = self.clock.monotonic()

    def _register(self, action: Register) -> None:
        container = action.container
        name = container_name(action.slot)
        previous = self.store.snapshot().containers.get(name)
        record = ContainerRecord(
            name=name,
            container_id=container.container_id,
            slot=action.slot,
            host=self.runtime.host,
            endpoint=self._endpoint(container),
            state=ContainerState.STARTING,
            restarts=(previous.restarts + 1) if previous is not None and action.restarted else 0,
            started_at=container.started_at,
        )
        self.epoch = self.store.register(record)
        created = self._created_at.pop(action.slot, None)
        details = [("Container ID", container.container_id[:12]), ("Endpoint", record.endpoint)]
        if created is not None:
            details.append(("Startup Time", f"{self.clock.monotonic() - created:.2f}s"))
        self._log(LogKind.POOL, name, "CONTAINER_STARTED", details)

    def _endpoint(self, container: ObservedContainer) -> str:
        port = container.host_port or self.config.container.host_ports[(container.slot or 1) - 1]
        return f"http://127.0.0.1:{port}/mcp"

    # -- logs ----------------------------------------------------------------------------
    def write_event_logs(self) -> int:
        """Turn new lease events into log records; acknowledged only once written or dropped."""
        written, ids = 0, []
        for entry_id, fields in self.store.read_events(f"supervisor-{self.runtime.host}"):
            ids.append(entry_id)
            if fields.get("kind") == "state" and fields.get("to") == ContainerState.RESTARTING:
                self._restart_reasons[fields.get("name", "")] = fields.get("reason", "")
            for kind, record in event_record(fields, self._memory, self.config.rules.error_threshold):
                self.writer.write(kind, record)
                written += 1
        self.store.ack_events(ids)
        return written

    def _log(self, kind: LogKind, subject: str, action: str, details: list[tuple[str, str]], level: str = "INFO") -> None:
        self.writer.write(kind, action_record(self.clock.now(), subject, action, details, level))

    def _report_error(self, error: Exception) -> None:
        """One ERROR_OCCURRED record per kind of error per period (ids do not make it new)."""
        message = str(error)
        shape = re.sub(r"[0-9a-f]{12,}", "<id>", message)
        now = self.clock.monotonic()
        if self._last_error is not None and self._last_error[0] == shape and now - self._last_error[1] < ERROR_REPORT_EVERY_S:
            return
        self._last_error = (shape, now)
        kind = (
            "image missing"
            if isinstance(error, ImageMissing)
            else "docker"
            if isinstance(error, RuntimeUnavailable)
            else "redis"
            if isinstance(error, redis.RedisError)
            else "pool"
        )
        self._log(LogKind.ERRORS, "pool", "ERROR_OCCURRED", [("Error Type", kind), ("Error", message)], level="ERROR")
        print(f"cinnamon-pool supervise: {kind}: {message}", file=sys.stderr)
