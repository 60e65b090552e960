"""Helpers shared by the lease tests (fakeredis and the real server)."""

from __future__ import annotations

import redis

from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import ContainerRecord, ContainerState


def record(slot: int, host: str = "host-a") -> ContainerRecord:
    return ContainerRecord(
        name=f"container-{slot:03d}",
        container_id=f"{slot:064x}",
        slot=slot,
        host=host,
        endpoint=f"http://127.0.0.1:{3000 + slot}/mcp",
        state=ContainerState.STARTING,
    )


def store_with(client: redis.Redis, containers: int, pool: str = "unit", **kwargs: float) -> LeaseStore:
    store = LeaseStore(client, pool, **kwargs)  # type: ignore[arg-type]
    for slot in range(1, containers + 1):
        store.register(record(slot))
    return store


def dump_state(client: redis.Redis, pool: str) -> dict[str, bytes | None]:
    """Byte-exact image of the pool's keys, to prove a rejected operation changed nothing."""
    keys = PoolKeys(pool)
    return {key: client.dump(key) for key in [*keys.all_state_keys(), keys.events]}
