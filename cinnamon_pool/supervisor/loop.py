"""The supervisor: observe -> plan -> apply, every tick, and the log files from the event stream.

The only process that talks to Docker. It re-lists the truth every tick (``rules.tick_s``);
Docker events only wake it early, and it ticks fast while a container is starting so a
replacement is registered as soon as its readiness probe passes. With an election, it acts
only while it leads its Docker host; a standby just waits.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import redis

from cinnamon_pool.clock import SYSTEM_CLOCK, Clock
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.errors import CinnamonError, ImageMissing, NotLeader, RuntimeUnavailable
from cinnamon_pool.health import ProbeResult, liveness, readiness
from cinnamon_pool.lease.store import LeaseStore, PoolSnapshot
from cinnamon_pool.logs.format import LogKind
from cinnamon_pool.logs.writer import DailyLogWriter
from cinnamon_pool.model import ContainerRecord, ContainerState, container_name
from cinnamon_pool.runtime.base import ContainerRuntime, ContainerSpec, ObservedContainer, pool_labels
from cinnamon_pool.supervisor.election import LeaderElection
from cinnamon_pool.supervisor.journal import Journal
from cinnamon_pool.supervisor.metrics import PoolMetrics, reason_label
from cinnamon_pool.supervisor.reconcile import (
    Action,
    Create,
    Deregister,
    Observation,
    Recycle,
    Register,
    RemoveOrphan,
    Replace,
    Retire,
    ScalePolicy,
    needs_probe,
    plan,
    scale,
)
from cinnamon_pool.supervisor.rules import HealthPolicy, Probe, StateChange, find_leftovers, judge

FAST_TICK_S = 0.05
EVENT_RECHECK_S = 0.1
MAX_BACKOFF_S = 30.0
RECHECK_S = 0.5  # while backing off from an outage: how often to look whether Redis and Docker answer again
Prober = Callable[[str, float], ProbeResult]


@dataclass
class TickReport:
    actions: list[Action | StateChange] = field(default_factory=list)
    pending: bool = False  # something is starting: tick again soon
    error: str | None = None
    unreachable: bool = False  # the error was Redis or Docker not answering (not, say, a missing image)
    standby: bool = False


class Supervisor:
    def __init__(
        self,
        config: PoolConfig,
        store: LeaseStore,
        runtime: ContainerRuntime,
        writer: DailyLogWriter,
        *,
        clock: Clock = SYSTEM_CLOCK,
        probe: Prober = readiness,
        health_probe: Prober = liveness,
        election: LeaderElection | None = None,
        metrics: PoolMetrics | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.runtime = runtime
        self.writer = writer
        self.metrics = metrics
        self.journal = Journal(
            writer,
            store,
            clock,
            f"supervisor-{runtime.host}",
            config.rules.error_threshold,
            on_event=metrics.lease_event if metrics else None,
        )
        self.clock = clock
        self.probe = probe
        self.health_probe = health_probe
        self.election = election
        self.pool = config.pool.name
        self.size = config.pool.initial_size
        self.wake = threading.Event()
        self.epoch: str | None = None
        rules = config.rules
        self.health_policy = HealthPolicy(rules.max_memory_mb, rules.health_failures, rules.health_timeout_s, rules.residue_processes)
        self.scale_policy = ScalePolicy(config.pool.min_size, config.pool.max_size, rules.idle_shrink_s, rules.scale_cooldown_s)
        self._network_ready = False
        self._created_at: dict[int, float] = {}  # slot -> monotonic time of create (startup time)
        self._processes: dict[str, int] = {}
        self._records: dict[str, ContainerRecord] = {}  # this host's records, as last observed
        self._idle_processes: dict[str, int] = {}  # process count right after registration
        self._slot_backoff: dict[int, tuple[int, float]] = {}  # slot -> (failed creations, next try at)
        self._probe_failures: dict[str, int] = {}
        self._probed_at: dict[str, float] = {}
        self._scaled_at = clock.monotonic()
        self._was_leading: bool | None = None  # None: not yet told
        self._probes = ThreadPoolExecutor(max_workers=8, thread_name_prefix="cinnamon-probe")

    # -- the loop ------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        watcher = threading.Thread(target=self.runtime.watch_events, args=(self.pool, self.wake, stop), daemon=True, name="docker-events")
        watcher.start()
        failures = 0
        try:
            woken = False
            while not stop.is_set():
                self.wake.clear()  # before the tick: an event that arrives during it is not lost
                report = self.tick()
                failures = failures + 1 if report.error else 0
                delay = self.next_wait(report, failures)
                if failures:
                    # Backing off (events must not cut it short), but an outage that ends is
                    # noticed within RECHECK_S: the pool resumes at once, not after up to 30 s.
                    self._back_off(stop, delay, report.unreachable)
                    continue
                # Docker announces a death before its listing says so: after a wake-up by an
                # event, look once more shortly even when this tick saw nothing to do.
                woken = self.wake.wait(min(delay, EVENT_RECHECK_S) if woken else delay)
        finally:
            if self.election is not None:
                self.election.resign()
            self._probes.shutdown(wait=False, cancel_futures=True)

    def _back_off(self, stop: threading.Event, delay: float, unreachable: bool) -> None:
        deadline = self.clock.monotonic() + delay
        while not stop.wait(min(RECHECK_S, max(0.0, deadline - self.clock.monotonic()))):
            if self.clock.monotonic() >= deadline or (unreachable and self._dependencies_answer()):
                return

    def _dependencies_answer(self) -> bool:
        try:
            self.store.redis.ping()
            self.runtime.list(self.pool)
        except (CinnamonError, redis.RedisError):
            return False
        return True

    def next_wait(self, report: TickReport, failures: int) -> float:
        """Fast while containers start; exponential backoff (1 s .. 30 s) while ticks fail."""
        if failures:
            return min(MAX_BACKOFF_S, 2.0 ** (failures - 1))
        if report.standby:
            return self.config.rules.leader_retry_s
        return FAST_TICK_S if report.pending else self.config.rules.tick_s

    def tick(self) -> TickReport:
        report = TickReport()
        try:
            if not self._lead():
                report.standby = True
                return report
            self.journal.archive()
            self.store.ensure_consumer_group()
            self.store.reap()
            self.journal.lease_events()  # first: the events tell why containers await a restart
            observation, snapshot = self.observe()
            if self.metrics is not None:
                self.metrics.observe_pool(snapshot, self.journal.memory_mb)
            changes = self._judge(observation, snapshot)
            for change in changes:
                self._apply_change(change)
            actions = plan(observation)
            self.size, shrink = scale(
                self.size, observation, self.scale_policy, snapshot.waiting, snapshot.free_since_ms, snapshot.now_ms, self._since_scaled()
            )
            if self.size > observation.size:
                self._scaled(
                    LogKind.POOL,
                    "POOL_EXPANDED",
                    [("From", str(observation.size)), ("To", str(self.size)), ("Waiting", str(snapshot.waiting))],
                )
            actions += [shrink] if shrink else []
            actions = [a for a in actions if not isinstance(a, Create) or self._slot_due(a.slot)]
            for action in actions:
                if self.election is not None and not self.election.leading:
                    raise NotLeader("lost the leadership during the tick; stopping before the next action")
                try:
                    self.apply(action)
                except RuntimeUnavailable as error:
                    # One slot that cannot start (its host port taken, say) must not hold up the
                    # others: it backs off on its own. A missing image stops the whole tick.
                    if isinstance(error, ImageMissing) or not isinstance(action, (Create, Replace)):
                        raise
                    self._slot_failed(action.slot, error)
            report.actions = [*changes, *actions]
            report.pending = (
                any(isinstance(a, (Create, Replace, Recycle)) for a in actions) or bool(needs_probe(observation)) or bool(changes)
            )
            self.journal.lease_events()  # and last: what this tick's actions produced, written now
        except (CinnamonError, redis.RedisError) as error:
            report.error = str(error)
            report.unreachable = isinstance(error, (redis.ConnectionError, redis.TimeoutError)) or (
                isinstance(error, RuntimeUnavailable) and not isinstance(error, ImageMissing)
            )
            self.journal.error(error)
            if self.metrics is not None:
                self.metrics.errors.labels(self.pool, type(error).__name__).inc()
        return report

    def _lead(self) -> bool:
        if self.election is None:
            return True
        leading = self.election.step()
        if leading != self._was_leading:
            self._was_leading = leading
            state = "LEADER_ELECTED" if leading else "LEADER_STANDBY"
            self.journal.record(
                LogKind.POOL,
                "pool",
                state,
                [("Supervisor", self.election.identity), ("Host", self.runtime.host)],
                level="INFO" if leading else "WARN",
            )
            print(f"cinnamon-pool supervise: {'leading' if leading else 'standing by'} for host {self.runtime.host}", file=sys.stderr)
        return leading

    # -- observe -------------------------------------------------------------------------
    def observe(self) -> tuple[Observation, PoolSnapshot]:
        containers = self.runtime.list(self.pool)
        snapshot = self.store.snapshot()
        self._check_epoch(snapshot, containers)
        records = {name: rec for name, rec in snapshot.containers.items() if rec.host == self.runtime.host}
        self._records = records
        base = Observation(self.pool, self.runtime.host, containers, records, {}, self.size, snapshot.draining)
        timeout = self.config.rules.health_timeout_s
        starting = needs_probe(base)
        ready = dict(
            zip(
                (c.container_id for c in starting),
                self._probes.map(lambda c: self.probe(self._endpoint(c), timeout).ok, starting),
                strict=True,
            )
        )
        running = {c.container_id for c in containers if c.running}
        memory: dict[str, float] = {}
        processes: dict[str, int] = {}
        for name, record in records.items():
            if record.container_id in running:
                reading = self.runtime.memory_mb(record.container_id)
                if reading is not None:
                    memory[name] = reading
                if record.state is ContainerState.AVAILABLE:  # the leftover-browser rule looks at free ones only
                    count = self.runtime.process_count(record.container_id)  # (docker top when cgroups are hidden)
                    if count is not None:
                        processes[name] = count
        self.store.record_memory(memory)
        self.journal.memory_mb, self._processes = memory, processes
        return Observation(self.pool, self.runtime.host, containers, records, ready, self.size, snapshot.draining), snapshot

    def _judge(self, observation: Observation, snapshot: PoolSnapshot) -> list[StateChange]:
        """Probe the serving containers whose interval is due (in parallel), then apply the rules."""
        now, interval = self.clock.monotonic(), self.config.rules.health_interval_s
        running = {c.container_id for c in observation.containers if c.running}
        due = [
            r
            for r in observation.records.values()
            if r.container_id in running and now - self._probed_at.get(r.name, float("-inf")) >= interval
        ]
        # Twice the timeout, so that a slow answer is told apart from no answer.
        results = self._probes.map(lambda r: self.health_probe(r.endpoint, 2 * self.config.rules.health_timeout_s), due)
        probes = {}
        for record, result in zip(due, results, strict=True):
            self._probed_at[record.name] = now
            if self.metrics is not None:
                self.metrics.probe.labels(self.pool).observe(result.seconds)
            probes[record.name] = Probe(result.ok, result.seconds, result.detail)
        changes, self._probe_failures = judge(observation.records, self.journal.memory_mb, probes, self._probe_failures, self.health_policy)
        free_for_s = {name: (snapshot.now_ms - since) / 1000 for name, since in snapshot.free_since_ms.items()}
        judged = {change.name for change in changes}
        leftovers = find_leftovers(
            observation.records, self._processes, self._idle_processes, free_for_s, self.health_policy.residue_processes
        )
        return changes + [change for change in leftovers if change.name not in judged]

    def _check_epoch(self, snapshot: PoolSnapshot, containers: list[ObservedContainer]) -> None:
        """Redis lost the pool's state: every container may hold a job's leftovers, so recycle all."""
        if self.epoch is not None and snapshot.epoch != self.epoch:
            self.journal.record(
                LogKind.ERRORS,
                "pool",
                "ERROR_OCCURRED",
                [("Error", "redis lost the pool state (epoch changed)"), ("Action", "recycling every container")],
                level="ERROR",
            )
            ours = [c.container_id for c in containers if c.running and c.belongs_to(self.pool)]
            list(self._probes.map(self.runtime.restart, ours))  # together: a pool of browsers restarts in the time of one
        self.epoch = snapshot.epoch

    # -- apply ---------------------------------------------------------------------------
    def _apply_change(self, change: StateChange) -> None:
        if self.store.set_state(change.name, change.state, change.reason, only_if_free=change.only_if_free) is None:
            return  # taken by a job meanwhile (only_if_free), or gone
        if change.state in {ContainerState.DRAINING, ContainerState.RESTARTING}:
            self.journal.restart_reasons[change.name] = change.reason
        level = "ERROR" if change.state is ContainerState.UNHEALTHY else "WARN"
        self.journal.record(
            LogKind.ERRORS if level == "ERROR" else LogKind.POOL,
            change.name,
            f"MARKED_{change.state.value.upper()}",
            [("Reason", change.reason)],
            level=level,
        )

    def apply(self, action: Action) -> None:
        if isinstance(action, Create):
            self._create(action.slot)
        elif isinstance(action, Replace):
            reason = action.reason
            if reason in {"container exited", "container dead"}:
                detail = self.runtime.exit_detail(action.container_id)  # before the removal erases it
                reason = f"{reason} ({detail})" if detail else reason
            self.runtime.remove(action.container_id)
            if self.metrics is not None:
                self.metrics.replacements.labels(self.pool, reason_label(action.reason.removeprefix("container "))).inc()
            self.journal.record(
                LogKind.POOL,
                container_name(action.slot),
                "CONTAINER_REPLACED",
                [("Reason", reason), ("Old Container", action.container_id[:12])],
                level="WARN",
            )
            self._create(action.slot)
        elif isinstance(action, Register):
            self._register(action)
        elif isinstance(action, Recycle):
            reason = self.journal.restart_reasons.pop(action.name, action.reason)
            self.runtime.restart(action.container_id)
            if self.metrics is not None:
                self.metrics.restarts.labels(self.pool, reason_label(reason)).inc()
            self.store.set_state(action.name, ContainerState.STARTING, f"restart: {reason}")
            self._created_at[action.slot] = self.clock.monotonic()
            self.journal.record(LogKind.POOL, action.name, "CONTAINER_RESTART", [("Reason", reason)], level="WARN")
        elif isinstance(action, Deregister):
            self.store.deregister(action.name, action.reason)
        elif isinstance(action, RemoveOrphan):
            self.runtime.remove(action.container_id)
            self.journal.record(
                LogKind.POOL, "pool", "ORPHAN_REMOVED", [("Container", action.container_id[:12]), ("Reason", action.reason)], level="WARN"
            )
        elif isinstance(action, Retire):
            self._retire(action)

    def _retire(self, action: Retire) -> None:
        retired = action.name is None or self.store.deregister(action.name, action.reason, only_if_unleased=True)
        if not retired and action.name in self.store.snapshot().containers:
            return  # leased meanwhile: it stays, and is looked at again next tick
        self.runtime.remove(action.container_id)
        if action.shrink and action.slot == self.size:
            self.size -= 1
            self._scaled(LogKind.POOL, "POOL_SHRUNK", [("From", str(action.slot)), ("To", str(self.size)), ("Reason", action.reason)])
        else:
            self.journal.record(LogKind.POOL, action.name or "pool", "CONTAINER_REMOVED", [("Reason", action.reason)])

    def _scaled(self, kind: LogKind, action: str, details: list[tuple[str, str]]) -> None:
        self._scaled_at = self.clock.monotonic()
        self.journal.record(kind, "pool", action, details)

    def _since_scaled(self) -> float:
        return self.clock.monotonic() - self._scaled_at

    def _slot_due(self, slot: int) -> bool:
        failed = self._slot_backoff.get(slot)
        return failed is None or self.clock.monotonic() >= failed[1]

    def _slot_failed(self, slot: int, error: RuntimeUnavailable) -> None:
        failures = self._slot_backoff.get(slot, (0, 0.0))[0] + 1
        self._slot_backoff[slot] = (failures, self.clock.monotonic() + min(MAX_BACKOFF_S, 2.0 ** (failures - 1)))
        self.journal.error(RuntimeUnavailable(f"{container_name(slot)} cannot start: {error}"))

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
        self._slot_backoff.pop(slot, None)
        self._created_at[slot] = self.clock.monotonic()

    def _register(self, action: Register) -> None:
        container = action.container
        name = container_name(action.slot)
        previous = self._records.get(name)  # as observed this tick
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
        self._probe_failures.pop(name, None)
        idle = self.runtime.process_count(container.container_id)
        if idle is not None:
            self._idle_processes[name] = idle
        created = self._created_at.pop(action.slot, None)
        details = [("Container ID", container.container_id[:12]), ("Endpoint", record.endpoint)]
        if created is not None:
            details.append(("Startup Time", f"{self.clock.monotonic() - created:.2f}s"))
        self.journal.record(LogKind.POOL, name, "CONTAINER_STARTED", details)

    def _endpoint(self, container: ObservedContainer) -> str:
        port = container.host_port or self.config.container.host_ports[(container.slot or 1) - 1]
        return f"http://127.0.0.1:{port}/mcp"
