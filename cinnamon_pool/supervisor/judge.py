"""The container rules on a tick's world: memory, errors and probes (rules.judge), leftovers of a
job in a free container, records that disagree with the leases, containers stranded on a host
whose supervisor is gone. Decides only: the actuator marks what it returns."""

from __future__ import annotations

from dataclasses import dataclass

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.supervisor.observe import World
from cinnamon_pool.supervisor.rules import HealthPolicy, StateChange, find_inconsistent, find_leftovers, find_stranded, judge
from cinnamon_pool.supervisor.state import SupervisorState


@dataclass
class Judge:
    config: PoolConfig
    host: str
    state: SupervisorState  # its probe failures and learned process counts are kept here
    health_policy: HealthPolicy

    def changes(self, world: World) -> list[StateChange]:
        """The container rules on this tick's readings and probes."""
        records, snapshot = world.observation.records, world.snapshot
        changes, self.state.probe_failures = judge(records, world.memory_mb, world.probes, self.state.probe_failures, self.health_policy)
        free_for_s = {name: (snapshot.now_ms - since) / 1000 for name, since in snapshot.free_since_ms.items()}
        baselines = self._process_baselines(world, free_for_s)
        leftovers = find_leftovers(records, world.processes, baselines, free_for_s, self.health_policy.residue_processes)
        inconsistent = find_inconsistent(records, snapshot.free_since_ms, snapshot.leases, snapshot.epoch)
        stranded = find_stranded(snapshot.containers, self.host, world.live_hosts, snapshot.free_since_ms)
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
