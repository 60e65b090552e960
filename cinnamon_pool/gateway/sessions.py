"""The MCP sessions of each lease: a request may name only a session its own lease opened or was
handed, and they all end (DELETE) when the lease ends.

So a job cannot reach the gateway's keeper, a prepared session meant for the next job, or a
session an earlier lease left, even if it read their ids from Redis. The sets are kept in Redis
(``cinnamon:{P}:lease_sessions``: container -> ``{"token", "sessions"}``, read back through
``decode``), so a restarted gateway still serves a running job and still ends what a lease opened.
"""

from __future__ import annotations

import json

from cinnamon_pool import decode
from cinnamon_pool.lease.gatewayside import GatewayStore
from cinnamon_pool.model import LeaseTrace

MAX_SESSIONS = 64  # per lease; a job opening more is refused a new one (clients open one or two)


class LeaseSessions:
    def __init__(self, store: GatewayStore) -> None:
        self.store = store
        self.open: dict[tuple[str, str], set[str]] = {}
        self.traces: dict[tuple[str, str], LeaseTrace] = {}  # the lease's handed session records a trace

    def __bool__(self) -> bool:
        return bool(self.open)

    def leases(self) -> list[tuple[str, str]]:
        return list(self.open)

    async def add(self, name: str, token: str, session: str, trace: LeaseTrace | None = None) -> bool:
        """Record that lease ``token`` on ``name`` holds ``session`` (which records ``trace``);
        False past MAX_SESSIONS."""
        held = self.open.setdefault((name, token), set())
        if session not in held and len(held) >= MAX_SESSIONS:
            return False
        held.add(session)
        if trace is not None:
            self.traces[(name, token)] = trace
        entry: dict[str, object] = {"token": token, "sessions": sorted(held)}
        if (name, token) in self.traces:
            entry["trace"] = self.traces[(name, token)].to_json_dict()
        await self.store.put_lease_sessions(name, json.dumps(entry))
        return True

    async def owns(self, name: str, token: str, session: str) -> bool:
        if session in self.open.get((name, token), ()):
            return True
        stored = await self._stored(name)
        if stored is None or stored[0] != token:
            return False
        self.open[(name, token)] = set(stored[1])  # a restarted gateway learns it back
        if stored[2] is not None:
            self.traces[(name, token)] = stored[2]
        return session in stored[1]

    async def pop(self, name: str, token: str) -> tuple[set[str], LeaseTrace | None]:
        """The sessions of the ended lease ``token`` on ``name`` and the trace one of them records,
        forgotten here and in Redis."""
        sessions, trace = self.open.pop((name, token), set()), self.traces.pop((name, token), None)
        raw = await self.store.lease_sessions(name)
        stored = self._decoded(name, raw)
        if stored is not None and stored[0] == token:
            sessions |= set(stored[1])
            trace = trace or stored[2]
        if raw is not None and (stored is None or stored[0] == token):
            await self.store.forget_lease_sessions(name, raw)
        return sessions, trace

    async def _stored(self, name: str) -> tuple[str, list[str], LeaseTrace | None] | None:
        return self._decoded(name, await self.store.lease_sessions(name))

    @staticmethod
    def _decoded(name: str, raw: object) -> tuple[str, list[str], LeaseTrace | None] | None:
        if raw is None:
            return None
        try:
            return decode.lease_sessions(name, raw)
        except decode.BadValue:
            return None  # not written by a gateway: owns nothing, and is dropped at the lease's end
