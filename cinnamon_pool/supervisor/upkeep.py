"""The pool's upkeep, decided: what a tick does besides the containers' plan (reconcile.py) and
their rules (rules.py), returned as chores (chores.py) for the actuator to carry out: a failover
that lost writes or an epoch change answered, the readings kept and published, values Redis
should not hold dropped, the desired size kept in range, asked for (``cinnamon-pool scale``) and
followed (the autoscaler), and released containers that no gateway prepares offered anyway.
It reads the tick's world and keeps its timers in SupervisorState; it writes nothing to Redis or
Docker."""

from __future__ import annotations

from dataclasses import dataclass

from cinnamon_pool import decode
from cinnamon_pool.clock import Clock
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.lease.replication import Lineage, lost_writes
from cinnamon_pool.model import ContainerState, PoolSnapshot, Rejected, SizeMode
from cinnamon_pool.supervisor.chores import AnswerSizeRequest, DropRejected, OfferCold, PublishReadings, RecycleAll, SetSize
from cinnamon_pool.supervisor.metrics import PoolMetrics
from cinnamon_pool.supervisor.observe import World
from cinnamon_pool.supervisor.reconcile import ScalePolicy, scale
from cinnamon_pool.supervisor.rules import find_overdue
from cinnamon_pool.supervisor.state import SupervisorState


@dataclass
class Upkeep:
    config: PoolConfig
    host: str
    state: SupervisorState
    clock: Clock
    scale_policy: ScalePolicy
    metrics: PoolMetrics | None = None

    @property
    def pool(self) -> str:
        return self.config.pool.name

    def lost_writes(self, now: Lineage | None) -> str | None:
        """Why a failover lost writes since the last tick (lease/replication.py; ``now`` None: INFO
        not allowed, the check is off), when the pool has state of ours to drop."""
        before, self.state.lineage = self.state.lineage, now
        why = lost_writes(before, now) if before is not None and now is not None else None
        return None if self.state.epoch is None else why  # nothing of ours in Redis yet

    def readings(self, world: World) -> PublishReadings:
        now = self.clock.monotonic()
        self.state.memory_mb, self.state.processes = world.memory_mb, world.processes
        self.state.container_ids = {
            name: record.container_id for name, record in world.snapshot.containers.items() if record.host == self.host
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
        return PublishReadings(world.memory_mb, self.state.cpu_percent)

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

    def rejected(self, snapshot: PoolSnapshot) -> list[DropRejected]:
        """Values the decoder refused: each reported once, then dropped if still the same bytes."""
        return [DropRejected(value, self.state.first_report(f"{value.key}|{value.field}|{value.value}")) for value in snapshot.rejected]

    def epoch(self, world: World) -> list[RecycleAll]:
        """Redis lost the pool's state: every container may hold a job's leftovers, so recycle all."""
        epoch = world.snapshot.epoch
        if self.state.epoch is None or epoch == self.state.epoch:
            self.state.epoch = epoch
            return []
        ours = tuple(c.container_id for c in world.observation.containers if c.running and c.belongs_to(self.pool, self.host))
        return [RecycleAll(ours, epoch)]

    def kept_size(self, world: World) -> list[SetSize]:
        """This host's desired size in Redis: stored once, then kept within pool.min_size..max_size."""
        stored, size = world.snapshot.desired.get(self.host), world.observation.size
        if stored is None:
            return [SetSize(size, "initial size", SizeMode.INIT)]
        if stored != size:
            policy = self.scale_policy
            return [SetSize(size, f"kept within pool.min_size..max_size ({policy.min_size}..{policy.max_size})")]
        return []

    def rescale(self, world: World) -> list[SetSize | AnswerSizeRequest]:
        """The operator's request first (``cinnamon-pool scale N``), else the autoscaler's step."""
        if world.size_request is not None:
            return [self._answer(world.size_request)]
        snapshot, size = world.snapshot, world.observation.size
        since_scaled = self.clock.monotonic() - self.state.scaled_at
        wanted, reason = scale(
            size, world.observation, self.scale_policy, snapshot.waiting, snapshot.free_since_ms, snapshot.now_ms, since_scaled
        )
        if wanted == size:
            return []
        # The 'scaled' event becomes POOL_EXPANDED / POOL_SHRUNK. Growth for waiting jobs is
        # decided once per pool: one host grows per cool-down, not every host at once.
        mode = SizeMode.GROW if wanted > size else SizeMode.SET
        return [SetSize(wanted, reason, mode, self.scale_policy.cooldown_s, scaled=True)]

    def _answer(self, raw: bytes | str) -> AnswerSizeRequest:
        """A request outside pool.min_size..max_size, or not a number, is refused (the CLI refuses
        it first; this is Redis' data); from a followed one on, the autoscaler follows the load."""
        policy = self.scale_policy
        try:
            wanted = decode.integer(raw, "size request", minimum=0)
        except decode.BadValue as error:
            return AnswerSizeRequest(raw, unreadable=Rejected("size_request", self.host, decode.shorten(raw, 40), str(error)))
        if not policy.min_size <= wanted <= policy.max_size:
            return AnswerSizeRequest(
                raw, refusal=f"scale {wanted} refused: outside pool.min_size..max_size ({policy.min_size}..{policy.max_size})"
            )
        return AnswerSizeRequest(raw, size=wanted)

    def overdue(self, world: World) -> list[OfferCold]:
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
            return []
        # this host's gateway stopped (or never prepared): nobody will offer them
        timeout = self.config.gateway.prepare_timeout_s if world.gateway_prepares else 0.0
        overdue = find_overdue(records, {n: now - t for n, t in since.items()}, timeout)
        for name in overdue:
            since.pop(name, None)
        return [OfferCold(name, timeout) for name in overdue]
