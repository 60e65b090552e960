"""What an operator does to a running pool, for the CLI (`kill`, `restart`, `scale`, `drain`) and
the dashboard's actions alike. Each returns what happened in a sentence, or raises
:class:`OperatorRefused` with the reason (a bad value named)."""

from __future__ import annotations

from cinnamon_pool.errors import CinnamonError
from cinnamon_pool.model import ContainerState, validate_container_name
from cinnamon_pool.pool import ContainerPool


class OperatorRefused(CinnamonError):
    """The action cannot be done as asked (the message says why)."""


def kill_run(pool: ContainerPool, test_run_id: str) -> list[str]:
    """End every lease of ``test_run_id``: its job gets LeaseLost, its container restarts."""
    leases = [lease for lease in pool.store.snapshot().leases.values() if lease.test_run_id == test_run_id]
    if not leases:
        raise OperatorRefused(f"no lease of test run {test_run_id!r} in pool {pool.name!r}")
    said = []
    for lease in leases:
        if pool.store.end_lease(lease.container, lease.token, f"operator kill: test run {test_run_id}"):
            said.append(f"{lease.container}: lease of test run {test_run_id!r} ended; the job gets LeaseLost, the container restarts")
        else:
            said.append(f"{lease.container}: the lease of test run {test_run_id!r} had already ended")
    return said


def restart(pool: ContainerPool, name: str) -> str:
    """Restart one container, after its current job if it has one."""
    name = validate_container_name(name)
    state = pool.store.set_state(name, ContainerState.DRAINING, "operator restart")
    if state is None:
        raise OperatorRefused(f"no container {name!r} in pool {pool.name!r}")
    return f"{name}: the supervisor restarts it {'when its job releases it' if state == ContainerState.DRAINING else 'now'}"


def scale_host(pool: ContainerPool, size: int, host: str | None) -> str:
    """The host (named, or the pool's only one) whose size ``size`` is asked for; the request is
    left in Redis for that host's supervisor."""
    low, high = pool.config.pool.min_size, pool.config.pool.max_size
    if not low <= size <= high:
        raise OperatorRefused(f"size {size} is outside pool.min_size..max_size ({low}..{high})")
    hosts = sorted(pool.store.snapshot().hosts)
    if host is None:
        if len(hosts) != 1:
            known = ", ".join(hosts) or "none yet: is `cinnamon-pool supervise` running?"
            raise OperatorRefused(f"pool {pool.name!r} has {len(hosts)} Docker hosts; name one with --host ({known})")
        host = hosts[0]
    elif host not in hosts:
        raise OperatorRefused(f"--host {host!r} is not a host of pool {pool.name!r} ({', '.join(hosts) or 'none'})")
    pool.store.request_size(host, size)
    return host


def drain(pool: ContainerPool, undo: bool = False) -> str:
    pool.drain(not undo)
    status = pool.status()
    if undo:
        return f"pool {status['pool']}: granting again; the supervisor brings the pool back to its size"
    return f"pool {status['pool']}: drained: no new grants; {status['allocated']} leased container(s) go when released, the rest now"
