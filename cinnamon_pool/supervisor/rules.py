"""The container rules, as pure functions: readings in, state changes out.

- memory over ``max_memory_mb`` -> draining (restarted when released, never mid-lease);
- no answer to a health probe within ``health_timeout_s`` (the seed's "no answer for 5 s:
  restart") -> draining, as for memory: restarted at once when free, when released when leased;
  unless every probe of the round (two or more) went unanswered in time: then the supervisor's
  own host is busy, and restarting the whole pool would only add load (each then counts as a
  failed probe instead);
- ``health_failures`` failed probes in a row -> unhealthy (the plan then replaces it);
- a free container running more than ``residue_processes`` processes above its idle count
  (a browser a job left open) -> restart, if it is still free;
- a record whose state disagrees with the free set or the leases (only something other than
  the scripts can do that: a hand edit, garbage, a partial restore) -> restart, so the container
  comes back through registration, clean and consistent.
The consecutive-error rule lives in the release script, which counts the outcomes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from cinnamon_pool.model import ContainerRecord, ContainerState

SERVING = {ContainerState.AVAILABLE, ContainerState.ALLOCATED, ContainerState.DRAINING}


@dataclass(frozen=True)
class HealthPolicy:
    max_memory_mb: float
    health_failures: int
    health_timeout_s: float
    residue_processes: int = 10


@dataclass(frozen=True)
class Probe:
    ok: bool
    seconds: float
    detail: str = ""
    timed_out: bool = False

    def late(self, timeout_s: float) -> bool:
        """Not answered within ``timeout_s``: no answer in time, or an answer after it."""
        return self.timed_out or (self.ok and self.seconds > timeout_s)


@dataclass(frozen=True)
class StateChange:
    name: str
    state: ContainerState
    reason: str
    only_if_free: bool = False  # leave it alone if a job took it meanwhile


def judge(
    records: Mapping[str, ContainerRecord],
    memory_mb: Mapping[str, float],
    probes: Mapping[str, Probe],
    failures: Mapping[str, int],
    policy: HealthPolicy,
) -> tuple[list[StateChange], dict[str, int]]:
    """State changes for this tick, and the consecutive probe failures carried to the next."""
    changes: list[StateChange] = []
    carried: dict[str, int] = {}
    timed = [p for p in probes.values() if p.ok or p.timed_out]
    host_busy = len(timed) >= 2 and all(p.late(policy.health_timeout_s) for p in timed)
    for name, record in sorted(records.items()):
        if record.state not in SERVING:
            continue
        count = failures.get(name, 0)
        probe = probes.get(name)
        if probe is not None:
            late = probe.late(policy.health_timeout_s)
            if late and not host_busy:
                if record.state is not ContainerState.DRAINING:
                    said = probe.detail if probe.timed_out else f"answered after {probe.seconds:.1f}s"
                    reason = f"no answer to a probe within {policy.health_timeout_s:g}s ({said})"
                    changes.append(StateChange(name, ContainerState.DRAINING, reason))
                continue
            slow = late  # and so was every other probe of the round
            count = 0 if probe.ok and not slow else count + 1
            if count >= policy.health_failures:
                detail = f"the last took {probe.seconds:.1f}s, like every probe of its round" if slow else probe.detail
                changes.append(StateChange(name, ContainerState.UNHEALTHY, f"{count} failed probes ({detail})"))
                continue
        carried[name] = count
        memory = memory_mb.get(name)
        if memory is not None and memory > policy.max_memory_mb and record.state is not ContainerState.DRAINING:
            changes.append(StateChange(name, ContainerState.DRAINING, f"memory {memory:.0f}MB > {policy.max_memory_mb:g}MB"))
    return changes, carried


def find_leftovers(
    records: Mapping[str, ContainerRecord],
    processes: Mapping[str, int],
    idle: Mapping[str, int],
    free_for_s: Mapping[str, float],
    margin: int,
) -> list[StateChange]:
    """Free containers (free for a second, so a session's DELETE has finished) running more
    processes than their idle count plus ``margin``: a job left a browser behind."""
    changes = []
    for name, record in sorted(records.items()):
        count, baseline = processes.get(name), idle.get(name)
        if record.state is not ContainerState.AVAILABLE or count is None or baseline is None or free_for_s.get(name, 0.0) < 1.0:
            continue
        if count > baseline + margin:
            changes.append(
                StateChange(
                    name, ContainerState.RESTARTING, f"browser left running: {count} processes (idle {baseline})", only_if_free=True
                )
            )
    return changes


def find_inconsistent(
    records: Mapping[str, ContainerRecord], free: Collection[str], leased: Collection[str], epoch: str | None
) -> list[StateChange]:
    """Records the scripts could not have left this way (read from one atomic snapshot). Records
    without the pool's metadata (its epoch gone, every token dead) all restart and re-register,
    which writes a new epoch."""
    changes = []
    for name, record in sorted(records.items()):
        if epoch is None and record.state not in {ContainerState.RESTARTING, ContainerState.STARTING}:
            changes.append(StateChange(name, ContainerState.RESTARTING, "the pool's metadata (epoch) is gone"))
        elif record.state is ContainerState.AVAILABLE and (name not in free or name in leased):
            changes.append(StateChange(name, ContainerState.RESTARTING, "available, but not in the free set"))
        elif record.state in {ContainerState.ALLOCATED, ContainerState.DRAINING} and name not in leased:
            changes.append(StateChange(name, ContainerState.RESTARTING, f"{record.state.value}, but no lease holds it"))
        elif record.state is ContainerState.PREPARING and (name in free or name in leased):
            changes.append(StateChange(name, ContainerState.RESTARTING, "preparing, but free or leased"))
    return changes


def find_overdue(records: Mapping[str, ContainerRecord], preparing_for_s: Mapping[str, float], timeout_s: float) -> list[str]:
    """Containers left 'preparing' longer than ``timeout_s`` (their gateway is gone, slow or off):
    they are offered anyway, and their next job pays the cold path."""
    return [
        name
        for name, record in sorted(records.items())
        if record.state is ContainerState.PREPARING and preparing_for_s.get(name, 0.0) > timeout_s
    ]


def find_stranded(
    records: Mapping[str, ContainerRecord], host: str, live_hosts: Collection[str], free: Collection[str]
) -> list[StateChange]:
    """Free containers of another Docker host whose supervisor is gone (its leader key expired):
    nobody probes them, and its gateway is likely gone too, so they leave the free set (restarting)
    until their host's supervisor comes back and recycles them. New jobs go to live hosts."""
    return [
        StateChange(name, ContainerState.RESTARTING, f"its host {record.host!r} has no live supervisor", only_if_free=True)
        for name, record in sorted(records.items())
        if record.host != host and record.host not in live_hosts and name in free
    ]
