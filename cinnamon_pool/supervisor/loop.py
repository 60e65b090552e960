"""The supervisor: observe -> decide -> apply, every tick, and the log files from the event stream.

The only process that talks to Docker. It re-lists the truth every tick (``rules.tick_s``);
Docker events only wake it early, and it ticks fast while a container is starting so a
replacement is registered as soon as its readiness probe passes. With an election, it acts
only while it leads its Docker host; a standby just waits.

A tick: ``Observer.observe`` reads (writes nothing); ``Judge`` (the container rules),
``reconcile.plan`` and ``Upkeep`` (the pool's chores: readings, rejected values, the epoch, the
size, overdue offers, scaling) decide and write nothing; the ``Actuator`` carries out every action
and chore, the only writer to Docker and to Redis. This module keeps the loop and the order of a
tick. What must survive a restart (the desired size, each container's state and the reason for
it) is in Redis; :class:`SupervisorState` keeps only readings and timers.
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
from cinnamon_pool.supervisor.chores import Chore
from cinnamon_pool.supervisor.election import LeaderElection
from cinnamon_pool.supervisor.journal import Journal
from cinnamon_pool.supervisor.judge import Judge
from cinnamon_pool.supervisor.metrics import PoolMetrics
from cinnamon_pool.supervisor.observe import Observer, Prober
from cinnamon_pool.supervisor.reconcile import Action, Create, Recycle, Replace, ScalePolicy, needs_probe, plan
from cinnamon_pool.supervisor.rules import (
    HealthPolicy,
    StateChange,
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
        self.actuator = Actuator(
            config, store, runtime, self.journal, self.state, clock, self.observer.endpoint, self._restart_all, metrics, door
        )
        self.upkeep = Upkeep(config, runtime.host, self.state, clock, self.scale_policy, metrics)
        self.judge = Judge(config, runtime.host, self.state, self.health_policy)
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
        """Observe (read only), decide (pure rules and the upkeep), apply (the actuator writes)."""
        self.journal.archive()
        why = self.upkeep.lost_writes(self.observer.lineage())
        if why is not None and self.actuator.forget_state(why):
            return  # the state is dropped: the next tick recycles every container (epoch gone)
        self.actuator.housekeep()
        self.journal.lease_events(self.state.memory_mb)
        if self.state.slot_base is None:  # the host's index is kept in Redis for good
            self.state.slot_base = self.actuator.join()
        world = self.observer.observe(self.state)
        if self.runtime.host not in world.snapshot.hosts:  # Redis lost it (amnesia): claim it again, the same if free
            self.state.slot_base = self.actuator.join(self.state.slot_base // SLOTS_PER_HOST)
            world = self.observer.observe(self.state)
        upkeep = self.upkeep
        chores: list[Chore] = [upkeep.readings(world), *upkeep.rejected(world.snapshot), *upkeep.epoch(world), *upkeep.kept_size(world)]
        for chore in chores:
            self.actuator.apply(chore)
        if self.metrics is not None:
            self.metrics.observe_pool(world.snapshot, self.state.memory_mb, self.state.cpu_percent)
        for offer in upkeep.overdue(world):
            self.actuator.apply(offer)
        changes = self.judge.changes(world)
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
        for step in upkeep.rescale(world):
            self.actuator.apply(step)
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

    def _restart_all(self, container_ids: list[str]) -> None:
        """Restart these containers together: a pool of browsers restarts in the time of one."""
        list(self._probes.map(self.runtime.restart, container_ids))
