"""Apply: carry out the plan's actions, the rules' state changes and the upkeep's chores, one
handler per type. The supervisor's only writer, to Docker and to Redis alike.

Every Docker call names a container id that the plan took from the engine's own listing (see
``reconcile.plan``); records written to Redis carry the endpoint built from the engine's port
mapping. Each action logs what it did through the journal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cinnamon_pool import backoff
from cinnamon_pool.clock import Clock
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.door import DoorAuth, container_env
from cinnamon_pool.errors import RuntimeUnavailable
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.logs.actions import Detail, LogAction
from cinnamon_pool.logs.events import restart_details, restart_reason
from cinnamon_pool.logs.format import LogKind
from cinnamon_pool.model import SLOTS_PER_HOST, ContainerRecord, ContainerState, Preparation, container_name, local_slot
from cinnamon_pool.runtime.base import ContainerRuntime, ContainerSpec, ObservedContainer, pool_labels
from cinnamon_pool.supervisor.chores import AnswerSizeRequest, Chore, DropRejected, OfferCold, PublishReadings, RecycleAll, SetSize
from cinnamon_pool.supervisor.journal import Journal
from cinnamon_pool.supervisor.metrics import PoolMetrics, reason_label
from cinnamon_pool.supervisor.reconcile import Action, Create, Deregister, Recycle, Register, RemoveOrphan, Replace, Retire
from cinnamon_pool.supervisor.rules import StateChange
from cinnamon_pool.supervisor.state import SupervisorState


class Actuator:
    def __init__(
        self,
        config: PoolConfig,
        store: LeaseStore,
        runtime: ContainerRuntime,
        journal: Journal,
        state: SupervisorState,
        clock: Clock,
        endpoint: Callable[[ObservedContainer], str],
        restart_all: Callable[[list[str]], None],
        metrics: PoolMetrics | None = None,
        door: DoorAuth | None = None,
    ) -> None:
        """``restart_all``: restart these containers together (in parallel: a pool of browsers
        restarts in the time of one)."""
        self.config, self.store, self.runtime, self.journal = config, store, runtime, journal
        self.door, self.restart_all = door, restart_all
        self.state, self.clock, self.endpoint, self.metrics = state, clock, endpoint, metrics
        self.pool = config.pool.name
        self._handlers: dict[type, Callable[[Any], None]] = {
            Create: self._create,
            Replace: self._replace,
            Register: self._register,
            Recycle: self._recycle,
            Deregister: self._deregister,
            RemoveOrphan: self._remove_orphan,
            Retire: self._retire,
            PublishReadings: self._publish_readings,
            DropRejected: self._drop_rejected,
            RecycleAll: self._recycle_all,
            SetSize: self._set_size,
            AnswerSizeRequest: self._answer_size_request,
            OfferCold: self._offer_cold,
        }

    def apply(self, action: Action | Chore) -> None:
        self._handlers[type(action)](action)

    def housekeep(self) -> None:
        """The event stream's consumer group made (once), and expired leases and waiters reaped."""
        self.store.ensure_consumer_group()
        self.store.reap()

    def join(self, had: int | None = None) -> int:
        """This host's slots' base, claimed in Redis (the same index again when it is free)."""
        return self.store.join(self.runtime.host, had) * SLOTS_PER_HOST

    def forget_state(self, why: str) -> bool:
        """A failover lost writes: drop the pool's state, as if Redis had lost it, so every token
        dies and every container is recycled; False when Redis holds nothing of the pool (all of
        it lost: the epoch check's to answer)."""
        if not self.store.has_epoch():
            return False
        details = [
            (Detail.ERROR, f"redis lost writes in a failover: {why}"),
            (Detail.ACTION, "dropping the pool state and recycling every container"),
        ]
        self.journal.record(LogKind.ERRORS, "pool", LogAction.ERROR_OCCURRED, details, level="ERROR")
        self.store.forget_state()
        return True

    def change(self, change: StateChange) -> None:
        if self.store.set_state(change.name, change.state, change.reason, only_if_free=change.only_if_free) is None:
            return  # taken by a job meanwhile (only_if_free), or gone
        level = "ERROR" if change.state is ContainerState.UNHEALTHY else "WARN"
        self.journal.record(
            LogKind.ERRORS if level == "ERROR" else LogKind.POOL,
            change.name,
            LogAction.marked(change.state),
            [(Detail.REASON, change.reason)],
            level=level,
        )

    def slot_due(self, slot: int) -> bool:
        failed = self.state.slot_backoff.get(slot)
        return failed is None or self.clock.monotonic() >= failed[1]

    def slot_failed(self, slot: int, error: RuntimeUnavailable) -> None:
        """One slot that cannot start (its host port taken, say) backs off on its own."""
        failures = self.state.slot_backoff.get(slot, (0, 0.0))[0] + 1
        self.state.slot_backoff[slot] = (failures, self.clock.monotonic() + backoff.after(backoff.SLOT_FAILED, failures))
        self.journal.error(RuntimeUnavailable(f"{container_name(slot)} cannot start: {error}"))

    # -- one handler per action ----------------------------------------------------------
    def _create(self, action: Create) -> None:
        template = self.config.container
        if not self.state.network_ready:
            self.runtime.ensure_network(template.network)
            if template.egress == "restricted":  # before the first container can reach anything
                self.runtime.ensure_egress(template.network, template.egress_allow)
            self.state.network_ready = True
        host_port = template.host_ports[local_slot(action.slot) - 1]
        spec = ContainerSpec(
            pool=self.pool,
            slot=action.slot,
            docker_name=f"cinnamon-{self.pool}-{container_name(action.slot)}",
            host_port=host_port,
            template=template,
            labels=pool_labels(self.pool, action.slot, self.runtime.host),
            command=template.command_for(host_port),
            env=container_env(self.config, self.door, host_port),
        )
        self.runtime.create(spec)
        self.state.slot_backoff.pop(action.slot, None)
        self.state.created_at[action.slot] = self.clock.monotonic()

    def _replace(self, action: Replace) -> None:
        reason = action.reason
        if reason in {"container exited", "container dead"}:
            detail = self.runtime.exit_detail(action.container_id)  # before the removal erases it
            reason = f"{reason} ({detail})" if detail else reason
        self.runtime.remove(action.container_id)
        if self.metrics is not None:
            self.metrics.replacements.labels(self.pool, reason_label(action.reason.removeprefix("container "))).inc()
        details = [(Detail.REASON, reason), (Detail.OLD_CONTAINER, action.container_id[:12])]
        self.journal.record(LogKind.POOL, container_name(action.slot), LogAction.CONTAINER_REPLACED, details, level="WARN")
        self._create(Create(action.slot, "replace"))

    def _register(self, action: Register) -> None:
        container, name = action.container, container_name(action.slot)
        record = ContainerRecord(
            name=name,
            container_id=container.container_id,
            slot=action.slot,
            host=self.runtime.host,
            endpoint=self._job_endpoint(name, container),
            state=ContainerState.STARTING,
            restarts=action.restarts,
            started_at=self.runtime.started_at(container.container_id) or container.started_at,  # uptime from the last start
        )
        self.state.epoch = self.store.register(record)
        self.state.forget_container(name)
        idle = self.runtime.process_count(container.container_id)
        if idle is not None:
            self.state.idle_processes[name] = idle
        created = self.state.created_at.pop(action.slot, None)
        details = [(Detail.CONTAINER_ID, container.container_id[:12]), (Detail.ENDPOINT, record.endpoint)]
        if created is not None:
            details.append((Detail.STARTUP_TIME, f"{self.clock.monotonic() - created:.2f}s"))
        self.journal.record(LogKind.POOL, name, LogAction.CONTAINER_STARTED, details)

    def _job_endpoint(self, name: str, container: ObservedContainer) -> str:
        """What jobs get: the gateway's URL for this container, or its own without a gateway."""
        gateway = self.config.gateway
        return gateway.endpoint(self.pool, name) if gateway.enabled else self.endpoint(container)

    def _recycle(self, action: Recycle) -> None:
        self.runtime.restart(action.container_id)
        if self.metrics is not None:
            self.metrics.restarts.labels(self.pool, restart_reason(action.reason)).inc()
        self.store.set_state(action.name, ContainerState.STARTING, f"restart: {action.reason}")
        self.state.created_at[action.slot] = self.clock.monotonic()
        up_s = self.clock.now().timestamp() - action.started_at if action.started_at else None
        details = restart_details(action.reason, self.state.memory_mb.get(action.name), action.error_count, up_s)
        self.journal.record(LogKind.POOL, action.name, LogAction.CONTAINER_RESTART, details, level="WARN")

    def _deregister(self, action: Deregister) -> None:
        self.store.deregister(action.name, action.reason)
        self.state.forget_container(action.name)
        if action.untrusted:
            details = [(Detail.ERROR, action.reason), (Detail.ACTION, "record dropped; Docker was not touched")]
            self.journal.record(LogKind.ERRORS, action.name, LogAction.ERROR_OCCURRED, details, level="ERROR")

    def _remove_orphan(self, action: RemoveOrphan) -> None:
        self.runtime.remove(action.container_id)
        details = [(Detail.CONTAINER, action.container_id[:12]), (Detail.REASON, action.reason)]
        self.journal.record(LogKind.POOL, "pool", LogAction.ORPHAN_REMOVED, details, level="WARN")

    # -- one handler per chore -----------------------------------------------------------
    def _publish_readings(self, chore: PublishReadings) -> None:
        self.store.record_readings(chore.memory_mb, chore.cpu_percent)

    def _drop_rejected(self, chore: DropRejected) -> None:
        if chore.report:
            self.journal.rejected(chore.value)
        self.store.forget(chore.value)

    def _recycle_all(self, chore: RecycleAll) -> None:
        details = [(Detail.ERROR, "redis lost the pool state (epoch changed)"), (Detail.ACTION, "recycling every container")]
        self.journal.record(LogKind.ERRORS, "pool", LogAction.ERROR_OCCURRED, details, level="ERROR")
        self.restart_all(list(chore.container_ids))
        self.state.epoch = chore.epoch

    def _set_size(self, chore: SetSize) -> None:
        self.store.set_size(self.runtime.host, chore.size, chore.reason, mode=chore.mode, cooldown_s=chore.cooldown_s)
        if chore.scaled:
            self.state.scaled_at = self.clock.monotonic()

    def _answer_size_request(self, chore: AnswerSizeRequest) -> None:
        if chore.unreadable is not None:
            self.journal.rejected(chore.unreadable)
        elif chore.refusal:
            details = [(Detail.ERROR, chore.refusal), (Detail.CONTEXT, "scale")]
            self.journal.record(LogKind.ERRORS, "pool", LogAction.ERROR_OCCURRED, details, level="ERROR")
        elif chore.size is not None:
            self._set_size(SetSize(chore.size, "operator: cinnamon-pool scale", scaled=True))
        self.store.drop_size_request(self.runtime.host, chore.raw)

    def _offer_cold(self, chore: OfferCold) -> None:
        if self.store.prepared(chore.name, "", Preparation.TIMEOUT, f"not prepared within {chore.timeout_s:g}s") != "noop":
            details = [(Detail.REASON, f"no prepared session within {chore.timeout_s:g}s; offered cold")]
            self.journal.record(LogKind.POOL, chore.name, LogAction.PREPARE_TIMEOUT, details, level="WARN")

    def _retire(self, action: Retire) -> None:
        retired = action.name is None or self.store.deregister(action.name, action.reason, only_if_unleased=True)
        if not retired and action.name in self.store.snapshot().containers:
            return  # leased meanwhile: it stays, and is looked at again next tick
        self.runtime.remove(action.container_id)
        if action.name is not None:
            self.state.forget_container(action.name)
        self.journal.record(LogKind.POOL, action.name or "pool", LogAction.CONTAINER_REMOVED, [(Detail.REASON, action.reason)])
