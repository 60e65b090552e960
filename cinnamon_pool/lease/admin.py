"""The supervisor's side of the lease store: register, move and remove containers, sizes, hosts,
leadership, reaping and readings. Every change that decides a lease runs as the leader (its
scripts check the caller's leader id)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping

import redis

from cinnamon_pool import decode
from cinnamon_pool.lease.client import ScriptClient
from cinnamon_pool.lease.redis_errors import translating
from cinnamon_pool.lease.scripts import Op, Status
from cinnamon_pool.model import ContainerRecord, ContainerState, Rejected, SizeMode, validate_container_name, validate_host, validate_token


class SupervisorSide(ScriptClient):
    @translating
    def register(self, record: ContainerRecord) -> str:
        """Add or re-add a ready container; returns the pool's epoch."""
        fields = record.to_json_dict()
        reply = self._run_as_leader(Op.REGISTER, json.dumps(fields), secrets.token_hex(8))
        return str(reply[1])

    @translating
    def set_state(
        self, name: str, state: ContainerState, reason: str, *, only_if_free: bool = False, only_if_token: str = ""
    ) -> str | None:
        """Move a container (see set_state.lua); None when unknown, leased and ``only_if_free``,
        or no longer held by ``only_if_token`` (the lease an operator meant to end, as Redis has
        it: its fingerprint)."""
        guard = "if_free" if only_if_free else f"if_token:{validate_token(only_if_token)}" if only_if_token else ""
        reply = self._run_as_leader(Op.SET_STATE, validate_container_name(name), ContainerState(state).value, reason, guard)
        return None if reply[0] in {Status.UNKNOWN, Status.BUSY} else str(reply[1])

    @translating
    def end_lease(self, name: str, token: str, reason: str) -> bool:
        """End the lease of ``token`` (its fingerprint, as read from the pool) on ``name`` now (its
        holder gets LeaseLost) and restart the container before it serves again; False when that
        lease no longer holds it."""
        return self.set_state(name, ContainerState.RESTARTING, reason, only_if_token=token) is not None

    @translating
    def request_size(self, host: str, size: int) -> None:
        """Ask the leader of ``host`` to set its desired size (``cinnamon-pool scale``); kept in
        Redis until that supervisor applies it, so a supervisor that starts later applies it too."""
        if size < 0:
            raise ValueError(f"size {size}: must be 0 or more")
        self.redis.set(self.keys.size_request(host), str(size))

    @translating
    def size_request(self, host: str) -> bytes | str | None:
        """The raw size request for ``host`` (decoded by the supervisor: it may not be ours). A
        key of another type is not ours either: it is deleted, and reported as a bad value."""
        try:
            raw: bytes | str | None = self.redis.get(self.keys.size_request(host))
        except redis.ResponseError:
            self.redis.delete(self.keys.size_request(host))
            return b"(a key of another type)"
        return raw

    @translating
    def drop_size_request(self, host: str, raw: bytes | str) -> None:
        """Delete the request once applied (or refused), unless another arrived meanwhile."""
        self._compare_and_delete(keys=[self.keys.size_request(host)], args=[raw])

    @translating
    def deregister(self, name: str, reason: str, *, only_if_unleased: bool = False) -> bool:
        """Remove a container's record (revoking its lease unless ``only_if_unleased``).

        Returns False when it was not registered, or is leased and ``only_if_unleased``."""
        reply = self._run_as_leader(Op.DEREGISTER, validate_container_name(name), reason, "if_unleased" if only_if_unleased else "")
        return reply[0] == Status.OK and bool(int(reply[1]))

    @translating
    def set_size(self, host: str, size: int, reason: str, *, mode: str = SizeMode.SET, cooldown_s: float = 0.0) -> int:
        """Set a Docker host's desired size (the slots it serves); returns the size in force.

        ``mode``: a :class:`SizeMode` (``grow`` waits ``cooldown_s`` since any host of the pool grew)."""
        if size < 0 or mode not in set(SizeMode):
            raise ValueError(f"size {size}, mode {mode!r}: size >= 0, mode set, init or grow")
        reply = self._run_as_leader(Op.SET_SIZE, validate_host(host), size, mode, reason[:200], int(cooldown_s * 1000))
        return decode.integer(reply[1], "size")

    @translating
    def join(self, host: str, had: int | None = None) -> int:
        """This Docker host's index in the pool (claimed on first call, kept for good); ``had``
        asks for the index the host used before Redis lost its data."""
        reply = self._run_as_leader(Op.HOST, validate_host(host), "" if had is None else had)
        return decode.integer(reply[1], "host index", minimum=0)

    @translating
    def forget(self, rejected: Rejected) -> bool:
        """Drop a value the decoder rejected, if it is still the same bytes (see forget.lua)."""
        if rejected.key not in {"containers", "leases", "free", "expiries", "desired"} or not rejected.field:
            return False
        value = b"" if rejected.key in {"free", "expiries"} else rejected.raw
        reply = self._run_as_leader(Op.FORGET, rejected.key, rejected.raw_field, value)
        return bool(int(reply[1]))

    @translating
    def leadership(self, op: str, identity: str, lease_s: float) -> bool:
        """Claim, renew or resign this host's supervisor leadership; True when it holds."""
        return bool(self._run(Op.LEADER, op, identity, int(lease_s * 1000))[0] == Status.OK)

    @translating
    def forget_state(self) -> None:
        """Drop the pool's state as a Redis that lost it would (the event stream stays). For a
        failover that lost writes: the supervisors then recycle every container and a new epoch
        makes every earlier token dead."""
        self.redis.delete(*self.keys.all_state_keys())

    @translating
    def reap(self) -> list[str]:
        """End expired leases; returns the containers that must be recycled."""
        return [str(name) for name in self._run_as_leader(Op.REAP) if name]

    @translating
    def set_draining(self, draining: bool) -> None:
        if draining:
            self.redis.set(self.keys.draining, "1")
        else:
            self.redis.delete(self.keys.draining)

    @translating
    def record_readings(self, memory_mb: Mapping[str, float], cpu_percent: Mapping[str, float]) -> None:
        """Publish the supervisor's latest memory and CPU readings (plain data, no lease decision)."""
        pipe = self.redis.pipeline(transaction=False)
        for key, readings in ((self.keys.memory, memory_mb), (self.keys.cpu, cpu_percent)):
            pipe.delete(key)
            if readings:
                pipe.hset(key, mapping={name: f"{value:.1f}" for name, value in readings.items()})
        pipe.execute()
