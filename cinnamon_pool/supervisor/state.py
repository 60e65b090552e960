"""What the supervisor loop keeps between ticks, in one object that the loop owns.

Nothing here must outlive the process: the desired size, the containers' states and why they
are draining or restarting all live in Redis and are read back every tick. This holds only
readings and timers that a new supervisor may start afresh (a probe is simply due at once, a
back-off starts over, an idle baseline is measured again at the next registration).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from cinnamon_pool.lease.replication import Lineage

REPORTED_MAX = 1000


@dataclass
class SupervisorState:
    epoch: str | None = None  # the pool's epoch last seen: a change means Redis lost its data
    lineage: Lineage | None = None  # Redis's replication lineage last seen: a failover that lost writes shows in it
    slot_base: int | None = None  # this host's index * SLOTS_PER_HOST, claimed in Redis once (then fixed)
    memory_mb: dict[str, float] = field(default_factory=dict)  # latest readings, by container name
    container_ids: dict[str, str] = field(default_factory=dict)  # this host's registered containers, by name
    cpu_counter: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (CPU seconds, monotonic) last read
    cpu_percent: dict[str, float] = field(default_factory=dict)  # name -> % of one core since the previous reading
    lease_peak_mb: dict[str, tuple[str, float]] = field(default_factory=dict)  # name -> (lease token, highest reading)
    processes: dict[str, int] = field(default_factory=dict)  # process counts of free containers
    idle_processes: dict[str, int] = field(default_factory=dict)  # count right after registration
    prepared_processes: dict[str, int] = field(default_factory=dict)  # lowest count seen free with keeper + prepared session
    probe_failures: dict[str, int] = field(default_factory=dict)  # consecutive failed health probes
    probed_at: dict[str, float] = field(default_factory=dict)  # monotonic time of the last probe
    created_at: dict[int, float] = field(default_factory=dict)  # slot -> monotonic time of create
    slot_backoff: dict[int, tuple[int, float]] = field(default_factory=dict)  # slot -> (failures, next try)
    preparing_since: dict[str, float] = field(default_factory=dict)  # monotonic time first seen 'preparing'
    scaled_at: float = float("-inf")  # monotonic time of the last change of the desired size
    network_ready: bool = False
    _reported: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def first_report(self, key: str) -> bool:
        """True the first time ``key`` is seen (bounded memory: the oldest keys are forgotten)."""
        if key in self._reported:
            return False
        self._reported[key] = None
        if len(self._reported) > REPORTED_MAX:
            self._reported.popitem(last=False)
        return True

    def forget_container(self, name: str) -> None:
        for readings in (
            self.memory_mb,
            self.processes,
            self.idle_processes,
            self.prepared_processes,
            self.probe_failures,
            self.probed_at,
            self.preparing_since,
        ):
            readings.pop(name, None)
