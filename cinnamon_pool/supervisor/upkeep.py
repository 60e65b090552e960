"""What a tick does besides the containers' plan (reconcile.py) and their rules (rules.py): a
failover that lost writes or an epoch change answered, the readings kept and published, values
Redis should not hold dropped, the desired size kept in range, asked for (``cinnamon-pool
scale``) and followed (the autoscaler), and released containers that no gateway prepares
offered anyway. The loop calls each at its place in the tick (loop.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cinnamon_pool import decode
from cinnamon_pool.clock import Clock
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.lease.replication import lost_writes
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.logs.actions import Detail, LogAction
from cinnamon_pool.logs.format import LogKind
from cinnamon_pool.model import ContainerState, PoolSnapshot, Preparation, Rejected, SizeMode
from cinnamon_pool.runtime.base import ContainerRuntime
from cinnamon_pool.supervisor.journal import Journal
from cinnamon_pool.supervisor.metrics import PoolMetrics
from cinnamon_pool.supervisor.observe import World
from cinnamon_pool.supervisor.reconcile import ScalePolicy, scale
from cinnamon_pool.supervisor.rules import find_overdue
from cinnamon_pool.supervisor.state import SupervisorState


@dataclass
class Upkeep:
    config: PoolConfig
    store: LeaseStore
    runtime: ContainerRuntime
    journal: Journal
    state: SupervisorState
    clock: Clock
    scale_policy: ScalePolicy
    restart_all: Callable[[list[str]], None]  # container ids, restarted together
    metrics: PoolMetrics | None = None

    @property
    def pool(self) -> str:
        return self.config.pool.name

    def lost_writes(self) -> bool:
        """A failover lost writes (lease/replication.py): drop the pool's state, as if Redis had
        lost it, so every token dies and every container is recycled."""
        now = self.store.lineage()  # None: INFO not allowed here, the check is off
        before, self.state.lineage = self.state.lineage, now
        why = lost_writes(before, now) if before is not None and now is not None else None
        if why is None or self.state.epoch is None or not self.store.has_epoch():
            return False  # nothing lost, nothing of ours in Redis yet, or all of it lost (amnesia: the epoch check's)
        self.journal.record(
            LogKind.ERRORS,
            "pool",
            LogAction.ERROR_OCCURRED,
            [
                (Detail.ERROR, f"redis lost writes in a failover: {why}"),
                (Detail.ACTION, "dropping the pool state and recycling every container"),
            ],
            level="ERROR",
        )
        self.store.forget_state()
        return True

    def take_readings(self, world: World) -> None:
        now = self.clock.monotonic()
        self.state.memory_mb, self.state.processes = world.memory_mb, world.processes
        self.state.container_ids = {
            name: record.container_id for name, record in world.snapshot.containers.items() if record.host == self.runtime.host
        }
        for name, lease in world.snapshot.leases.items():
            reading = world.memory_mb.get(name)
            if reading is not None:
                token, peak = self.state.lease_peak_mb.get(name, (lease.token, reading))
                self.state.lease_peak_mb[name] = (lease.token, max(peak, reading) if token == lease.token else reading)
        for name in world.probes:
            self.state.probed_at[name] = now
            if self.metrics is not None:
                self.metrics.probe.labels(self.pool).observe(world.probes[name].seconds)
        self._cpu(world.cpu_seconds, now)
        self.store.record_readings(world.memory_mb, self.state.cpu_percent)

    def _cpu(self, counters: dict[str, float], now: float) -> None:
        """CPU use since the previous reading, in % of one core (a restarted container's counter
        starts over: that reading is skipped)."""
        percent = {}
        for name, used in counters.items():
            before = self.state.cpu_counter.get(name)
            if before is not None and used >= before[0] and now > before[1]:
                percent[name] = (used - before[0]) / (now - before[1]) * 100
        self.state.cpu_counter = {name: (used, now) for name, used in counters.items()}
        self.state.cpu_percent = percent

    def drop_rejected(self, snapshot: PoolSnapshot) -> None:
        """Values the decoder refused: each reported once, then dropped if still the same bytes."""
        for value in snapshot.rejected:
            if self.state.first_report(f"{value.key}|{value.field}|{value.value}"):
                self.journal.rejected(value)
            self.store.forget(value)

    def check_epoch(self, world: World) -> None:
        """Redis lost the pool's state: every container may hold a job's leftovers, so recycle all."""
        epoch = world.snapshot.epoch
        if self.state.epoch is not None and epoch != self.state.epoch:
            self.journal.record(
                LogKind.ERRORS,
                "pool",
                LogAction.ERROR_OCCURRED,
                [(Detail.ERROR, "redis lost the pool state (epoch changed)"), (Detail.ACTION, "recycling every container")],
                level="ERROR",
            )
            host = self.runtime.host
            ours = [c.container_id for c in world.observation.containers if c.running and c.belongs_to(self.pool, host)]
            self.restart_all(ours)
        self.state.epoch = epoch

    def keep_size(self, world: World) -> None:
        """This host's desired size in Redis: stored once, then kept within pool.min_size..max_size."""
        stored = world.snapshot.desired.get(self.runtime.host)
        if stored is None:
            self.store.set_size(self.runtime.host, world.observation.size, "initial size", mode=SizeMode.INIT)
        elif stored != world.observation.size:
            self.store.set_size(
                self.runtime.host,
                world.observation.size,
                f"kept within pool.min_size..max_size ({self.scale_policy.min_size}..{self.scale_policy.max_size})",
            )

    def rescale(self, world: World) -> None:
        if self._operator_scale():
            return
        snapshot, size = world.snapshot, world.observation.size
        since_scaled = self.clock.monotonic() - self.state.scaled_at
        wanted, reason = scale(
            size, world.observation, self.scale_policy, snapshot.waiting, snapshot.free_since_ms, snapshot.now_ms, since_scaled
        )
        if wanted == size:
            return
        # The 'scaled' event becomes POOL_EXPANDED / POOL_SHRUNK. Growth for waiting jobs is
        # decided once per pool: one host grows per cool-down, not every host at once.
        mode = SizeMode.GROW if wanted > size else SizeMode.SET
        self.store.set_size(self.runtime.host, wanted, reason, mode=mode, cooldown_s=self.scale_policy.cooldown_s)
        self.state.scaled_at = self.clock.monotonic()

    def _operator_scale(self) -> bool:
        """Apply ``cinnamon-pool scale N`` (a request kept in Redis until this host's leader takes
        it): the desired size, persisted like any other. From there the autoscaler follows the
        load as usual. A request outside pool.min_size..max_size, or not a number, is refused
        with an ERROR_OCCURRED record (the CLI refuses it first; this is Redis' data)."""
        host, policy = self.runtime.host, self.scale_policy
        raw = self.store.size_request(host)
        if raw is None:
            return False
        try:
            wanted = decode.integer(raw, "size request", minimum=0)
        except decode.BadValue as error:
            self.journal.rejected(Rejected("size_request", host, decode.shorten(raw, 40), str(error)))
            self.store.drop_size_request(host, raw)
            return False
        if not policy.min_size <= wanted <= policy.max_size:
            details = [(Detail.ERROR, f"scale {wanted} refused: outside pool.min_size..max_size ({policy.min_size}..{policy.max_size})")]
            self.journal.record(LogKind.ERRORS, "pool", LogAction.ERROR_OCCURRED, [*details, (Detail.CONTEXT, "scale")], level="ERROR")
            self.store.drop_size_request(host, raw)
            return False
        self.store.set_size(host, wanted, "operator: cinnamon-pool scale")
        self.state.scaled_at = self.clock.monotonic()
        self.store.drop_size_request(host, raw)
        return True

    def offer_overdue(self, world: World) -> None:
        """Released containers waiting for a gateway that does not prepare them in time (or at
        all: prepared sessions turned off) are offered anyway."""
        now, records = self.clock.monotonic(), world.observation.records
        since = self.state.preparing_since
        for name in [n for n in since if n not in records or records[n].state is not ContainerState.PREPARING]:
            del since[name]
        for name, record in records.items():
            if record.state is ContainerState.PREPARING:
                since.setdefault(name, now)
        if not since:
            return
        timeout = self.config.gateway.prepare_timeout_s
        if not self.store.preparing_hosts([self.runtime.host]):
            timeout = 0.0  # this host's gateway stopped (or never prepared): nobody will offer them
        for name in find_overdue(records, {n: now - t for n, t in since.items()}, timeout):
            if self.store.prepared(name, "", Preparation.TIMEOUT, f"not prepared within {timeout:g}s") != "noop":
                self.journal.record(
                    LogKind.POOL,
                    name,
                    LogAction.PREPARE_TIMEOUT,
                    [(Detail.REASON, f"no prepared session within {timeout:g}s; offered cold")],
                    level="WARN",
                )
            since.pop(name, None)
