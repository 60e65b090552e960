"""The supervisor: observe -> plan -> apply, every tick, and the log files from the event stream.

The only process that talks to Docker. It re-lists the truth every tick (``rules.tick_s``);
Docker events only wake it early, and it ticks fast while a container is starting so a
replacement is registered as soon as its readiness probe passes. With an election, it acts
only while it leads its Docker host; a standby just waits.

A tick: ``Observer.observe`` (read only) -> ``rules.judge`` and ``reconcile.plan`` / ``scale``
(pure) -> ``Actuator`` (writes), with the pool's upkeep (readings, size, epoch, overdue offers:
upkeep.py) at its places in between. This module keeps the loop and the order of a tick. What must survive a restart (the desired size, each container's
state and the reason for it) is in Redis; :class:`SupervisorState` keeps only readings and timers.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from loguru import logger

from cinnamon_pool import backoff
from cinnamon_pool.clock import SYSTEM_CLOCK, Clock
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.door import DoorAuth
from cinnamon_pool.errors import CinnamonError, ImageMissing, NotLeader, RuntimeUnavailable, StoreUnavailable
from cinnamon_pool.health import liveness, probe_client, readiness
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.logs.actions import Detail, LogAction
from cinnamon_pool.logs.format import LogKind
from cinnamon_pool.logs.writer import DailyLogWriter
from cinnamon_pool.model import SLOTS_PER_HOST
from cinnamon_pool.runtime.base import ContainerRuntime
from cinnamon_pool.supervisor.actuator import Actuator
from cinnamon_pool.supervisor.election import LeaderElection
from cinnamon_pool.supervisor.journal import Journal
from cinnamon_pool.supervisor.metrics import PoolMetrics
from cinnamon_pool.supervisor.observe import Observer, Prober, World
from cinnamon_pool.supervisor.reconcile import Action, Create, Recycle, Replace, ScalePolicy, needs_probe, plan
from cinnamon_pool.supervisor.rules import (
    HealthPolicy,
    StateChange,
    find_inconsistent,
    find_leftovers,
    find_stranded,
    judge,
)
from cinnamon_pool.supervisor.state import SupervisorState
from cinnamon_pool.supervisor.upkeep import Upkeep

FAST_TICK_S = 0.05
EVENT_RECHECK_S = 0.1
RECHECK_S = 0.5  # while backing off from an outage: how often to look whether Redis and Docker answer again


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
        probe: Prober | None = None,
        health_probe: Prober | None = None,
        election: LeaderElection | None = None,
        metrics: PoolMetrics | None = None,
        door: DoorAuth | None = None,
    ) -> None:
        """``door``: this host's (door.door_for), put in each new container and sent by the
        default probes; None: containers without a door secret (direct mode, or tests)."""
        self.config, self.store, self.runtime, self.clock = config, store, runtime, clock
        self.election, self.metrics = election, metrics
        self.pool = config.pool.name
        self.wake = threading.Event()
        self.state = SupervisorState()
        self.journal = Journal(
            writer,
            store,
            clock,
            f"supervisor-{runtime.host}",
            config.rules.error_threshold,
            on_event=metrics.lease_event if metrics else None,
            read_memory=self._memory_now,
            peak_memory=self._lease_peak,
        )
        rules = config.rules
        self.health_policy = HealthPolicy(rules.max_memory_mb, rules.health_failures, rules.health_timeout_s, rules.residue_processes)
        self.scale_policy = ScalePolicy(config.pool.min_size, config.pool.max_size, rules.idle_shrink_s, rules.scale_cooldown_s)
        # Probes wait on the containers (other processes, other cores): one thread per container
        # up to 32, so a health round over a large host is a few waits, not size/8 of them.
        self._probes = ThreadPoolExecutor(max_workers=max(8, min(32, config.pool.max_size)), thread_name_prefix="cinnamon-probe")
        self._http = probe_client(door)  # the default probes' (with the host's door)
        self.observer = Observer(
            config,
            store,
            runtime,
            self._probes,
            readiness=probe or functools.partial(readiness, client=self._http),
            liveness=health_probe or functools.partial(liveness, client=self._http),
            clock=clock,
            watch_hosts=election is not None,
        )
        self.actuator = Actuator(config, store, runtime, self.journal, self.state, clock, self.observer.endpoint, metrics, door)
        self.upkeep = Upkeep(config, store, runtime, self.journal, self.state, clock, self.scale_policy, self._restart_all, metrics)
        self._was_leading: bool | None = None  # None: not yet told

    @property
    def size(self) -> int:
        """This host's desired size as stored in Redis (initial_size until one is stored)."""
        return self.store.snapshot().desired.get(self.runtime.host, self.config.pool.initial_size)

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
            self._http.close()

    def _back_off(self, stop: threading.Event, delay: float, unreachable: bool) -> None:
        deadline = self.clock.monotonic() + delay
        while not stop.wait(min(RECHECK_S, max(0.0, deadline - self.clock.monotonic()))):
            if self.clock.monotonic() >= deadline or (unreachable and self._dependencies_answer()):
                return

    def _dependencies_answer(self) -> bool:
        try:
            self.store.ping()
            self.runtime.list(self.pool)
        except CinnamonError:
            return False
        return True

    def next_wait(self, report: TickReport, failures: int) -> float:
        """Fast while containers start; exponential backoff (1 s .. 30 s) while ticks fail."""
        if failures:
            return backoff.after(backoff.TICK_FAILED, failures)
        if report.standby:
            return self.config.rules.leader_retry_s
        return FAST_TICK_S if report.pending else self.config.rules.tick_s

    def tick(self) -> TickReport:
        report = TickReport()
        try:
            if not self._lead():
                report.standby = True
                self.state.lineage = None  # what Redis did meanwhile is the leader's to judge, not ours later
                return report
            self._tick(report)
        except CinnamonError as error:
            report.error = str(error)
            report.unreachable = isinstance(error, StoreUnavailable) or (
                isinstance(error, RuntimeUnavailable) and not isinstance(error, ImageMissing)
            )
            self.journal.error(error)
            if self.metrics is not None:
                self.metrics.errors.labels(self.pool, type(error).__name__).inc()
        except Exception as error:  # a defect, or data nobody foresaw: say where, back off, go on (never a crash loop)
            logger.opt(exception=error).error("tick failed: {}: {}", type(error).__name__, error)
            report.error = f"{type(error).__name__}: {error}"
            self.journal.error(error)
            if self.metrics is not None:
                self.metrics.errors.labels(self.pool, "unexpected").inc()
        return report

    def _tick(self, report: TickReport) -> None:
        self.journal.archive()
        if self.upkeep.lost_writes():
            return  # the state is dropped: the next tick recycles every container (epoch gone)
        self.store.ensure_consumer_group()
        self.store.reap()
        self.journal.lease_events(self.state.memory_mb)
        if self.state.slot_base is None:  # the host's index is kept in Redis for good
            self.state.slot_base = self.store.join(self.runtime.host) * SLOTS_PER_HOST
        world = self.observer.observe(self.state)
        if self.runtime.host not in world.snapshot.hosts:  # Redis lost it (amnesia): claim it again, the same if free
            self.state.slot_base = self.store.join(self.runtime.host, self.state.slot_base // SLOTS_PER_HOST) * SLOTS_PER_HOST
            world = self.observer.observe(self.state)
        self.upkeep.take_readings(world)
        self.upkeep.drop_rejected(world.snapshot)
        self.upkeep.check_epoch(world)
        self.upkeep.keep_size(world)
        if self.metrics is not None:
            self.metrics.observe_pool(world.snapshot, self.state.memory_mb, self.state.cpu_percent)
        self.upkeep.offer_overdue(world)
        changes = self._judge(world)
        for change in changes:
            self.actuator.change(change)
        actions = [a for a in plan(world.observation) if not isinstance(a, Create) or self.actuator.slot_due(a.slot)]
        for action in actions:
            if self.election is not None and not self.election.leading:
                raise NotLeader("lost the leadership during the tick; stopping before the next action")
            try:
                self.actuator.apply(action)
            except RuntimeUnavailable as error:
                # One slot that cannot start (its host port taken, say) must not hold up the
                # others: it backs off on its own. A missing image stops the whole tick.
                if isinstance(error, ImageMissing) or not isinstance(action, (Create, Replace)):
                    raise
                self.actuator.slot_failed(action.slot, error)
        self.upkeep.rescale(world)
        report.actions = [*changes, *actions]
        report.pending = (
            any(isinstance(a, (Create, Replace, Recycle)) for a in actions) or bool(needs_probe(world.observation)) or bool(changes)
        )
        self.journal.lease_events(self.state.memory_mb)  # and last: what this tick's actions produced, written now

    def _memory_now(self, name: str) -> float | None:
        """A container of this host's memory, read now (the log's Memory After Cleanup); only from
        its cgroup: a `docker stats` per release would slow the tick (then the last reading is used)."""
        container_id = self.state.container_ids.get(name)
        return None if container_id is None else self.runtime.memory_mb_cheap(container_id)

    def _lease_peak(self, name: str, token: str) -> float | None:
        """The highest reading of ``name`` during the lease of ``token`` (taken once: released)."""
        kept = self.state.lease_peak_mb.get(name)
        if kept is None or kept[0] != token:
            return None
        del self.state.lease_peak_mb[name]
        return kept[1]

    def _lead(self) -> bool:
        if self.election is None:
            return True
        leading = self.election.step()
        if leading != self._was_leading:
            self._was_leading = leading
            state = LogAction.LEADER_ELECTED if leading else LogAction.LEADER_STANDBY
            self.journal.record(
                LogKind.POOL,
                "pool",
                state,
                [(Detail.SUPERVISOR, self.election.identity), (Detail.HOST, self.runtime.host)],
                level="INFO" if leading else "WARN",
            )
            logger.log("INFO" if leading else "WARNING", "{} for host {}", "leading" if leading else "standing by", self.runtime.host)
        return leading

    def _judge(self, world: World) -> list[StateChange]:
        """The container rules on this tick's readings and probes."""
        records, snapshot = world.observation.records, world.snapshot
        changes, self.state.probe_failures = judge(records, world.memory_mb, world.probes, self.state.probe_failures, self.health_policy)
        free_for_s = {name: (snapshot.now_ms - since) / 1000 for name, since in snapshot.free_since_ms.items()}
        baselines = self._process_baselines(world, free_for_s)
        leftovers = find_leftovers(records, world.processes, baselines, free_for_s, self.health_policy.residue_processes)
        inconsistent = find_inconsistent(records, snapshot.free_since_ms, snapshot.leases, snapshot.epoch)
        stranded = find_stranded(snapshot.containers, self.runtime.host, world.live_hosts, snapshot.free_since_ms)
        for change in [*leftovers, *inconsistent, *stranded]:
            if change.name not in {c.name for c in changes}:
                changes.append(change)
        return changes

    def _process_baselines(self, world: World, free_for_s: dict[str, float]) -> dict[str, int]:
        """What a free container runs when nothing was left behind: its count right after
        registration, or, while its gateway holds a keeper and a prepared session on it (a
        browser, a context and a blank page; without a gateway, the keeper ``supervise`` holds),
        the lowest count seen that way. A container whose
        sessions are still being made (prepared sessions on, free for less than the preparing
        time-out) is not judged yet."""
        baselines: dict[str, int] = {}
        learned, gateway = self.state.prepared_processes, self.config.gateway
        held = frozenset({"keeper", "prepared"}) if gateway.prepares else frozenset({"keeper"})
        for name, count in world.processes.items():
            if world.held.get(name) == held:
                learned[name] = min(learned.get(name, count), count)
                baselines[name] = learned[name]
            elif gateway.prepare and free_for_s.get(name, 0.0) < gateway.prepare_timeout_s:
                continue  # its sessions are still being made (their browser may already be up)
            elif name in learned or name in self.state.idle_processes:
                baselines[name] = learned.get(name, self.state.idle_processes.get(name, 0))
        return baselines

    def _restart_all(self, container_ids: list[str]) -> None:
        """Restart these containers together: a pool of browsers restarts in the time of one."""
        list(self._probes.map(self.runtime.restart, container_ids))
