"""Which on-connect sessions still count: those whose binding names the container's current,
unexpired lease (lease/apikeys.py ``live_sessions``)."""

from __future__ import annotations

import json

from cinnamon_pool.lease.apikeys import live_sessions

NOW = 1_000_000
NONCE = "0" * 32
EPOCH = "ab" * 8


def token(generation: int) -> str:
    return f"{EPOCH}:{generation}:{'c' * 16}"


def lease(token: str, expires_ms: int) -> bytes:
    return json.dumps({"token": token, "granted_ms": 0, "expires_ms": expires_ms, "cap_ms": NOW * 2}).encode()


def binding(container: str, token: str, key: str = "agent") -> bytes:
    fields = {"key": key, "container": container, "token": token, "test_run_id": "run", "opened_ms": 1, "nonce": NONCE}
    return json.dumps(fields).encode()


def test_a_binding_counts_only_while_its_lease_is_the_containers_current_one() -> None:
    leases = {b"container-001": lease(token(1), NOW + 10), b"container-002": lease(token(2), NOW - 1)}
    bindings = {
        b"s-live": binding("container-001", token(1)),
        b"s-expired": binding("container-002", token(2)),  # its lease is past its expiry (not reaped yet)
        b"s-replaced": binding("container-001", token(0)),  # an earlier lease of the same container
        b"s-gone": binding("container-003", token(3)),  # no lease at all
        b"s-unreadable": b"{not json",
    }
    live, ended = live_sessions(bindings, leases, NOW)
    assert [b.session for b in live] == ["s-live"]
    assert sorted(field for field, _ in ended) == [b"s-expired", b"s-gone", b"s-replaced"]
    assert dict(ended)[b"s-gone"] == bindings[b"s-gone"], "the value read, for compare-and-delete"
