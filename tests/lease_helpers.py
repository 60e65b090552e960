"""Helpers shared by the lease tests (fakeredis and the real server)."""

from __future__ import annotations

from collections import defaultdict

import redis

from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import ContainerRecord, ContainerState
from tests.support import stream_entries


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


def assert_one_lease_at_a_time(client: redis.Redis, keys: PoolKeys) -> None:
    """From the pool's event stream: on every container, each grant is ended (released or
    revoked) by its own token before the next grant."""
    history: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for fields in stream_entries(client, keys.events):
        kind, name = fields[b"kind"].decode(), fields[b"name"].decode()
        if kind == "granted":
            history[name].append(("start", fields[b"token"].decode()))
        elif kind in {"released", "revoked"}:
            history[name].append(("end", fields[b"token"].decode()))
    for name, events in history.items():
        open_token = None
        for kind, token in events:
            if kind == "start":
                assert open_token is None, f"{name} granted to {token} while {open_token} still held it"
                open_token = token
            else:
                assert token == open_token, f"{name}: {token} ended a lease it did not hold ({open_token})"
                open_token = None
