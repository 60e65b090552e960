"""Route and authorize one gateway request: ``/{pool}/{container}/mcp`` with a bearer token.

A request is forwarded only when its token is, at this moment and by Redis' clock, the current
lease token of that container, and the container is one of this host's. Every refusal is a
:class:`Refusal` with its status code; ``app`` turns it into one JSON response. The container's
address comes from the configuration (the slot's published port on 127.0.0.1), never from Redis.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from cinnamon_pool import decode, tokens
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.errors import CinnamonError, InvalidIdentifier
from cinnamon_pool.lease.gatewayside import GatewayStore
from cinnamon_pool.model import local_slot, validate_container_name, validate_token

MAX_TOKEN_CHARS = 64  # epoch:generation:random is at most 53


class Refusal(CinnamonError):
    """A request the gateway does not forward; ``status`` is the HTTP answer, ``reason`` a
    bounded label for metrics and the log."""

    def __init__(self, status: int, reason: str, message: str, container: str = "", *, extra: dict[str, object] | None = None) -> None:
        self.status, self.reason, self.message, self.container = status, reason, message, container
        self.extra = dict(extra or {})  # more of the answer's JSON body (a full pool's counts)
        super().__init__(f"{status} {reason}: {message}")


@dataclass(frozen=True)
class Target:
    """Where an authorized request goes."""

    name: str
    token: str  # the lease's fingerprint (tokens.py), as the pool's keys, events and sessions name it
    upstream: str  # http://127.0.0.1:<published port>/mcp
    container_id: str = ""  # the container the record names now
    restarts: int = 0  # and its restarts so far (a restart in place keeps the id)
    holder: str = ""  # the lease's worker: an rq worker, or client:<API key name> for a session on connect
    test_run_id: str = ""
    artifacts: str = ""  # the holder's artifacts policy: when the lease's trace is kept ("" = failure)


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer ...`` header; 401 without one, 403 for a value
    that cannot be a lease token (too long, wrong shape)."""
    if not header:
        raise Refusal(401, "no_token", "send Authorization: Bearer <lease token>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refusal(401, "no_token", "send Authorization: Bearer <lease token>")
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS:
        raise Refusal(403, "bad_token", f"a lease token is at most {MAX_TOKEN_CHARS} characters")
    try:
        return validate_token(token)
    except InvalidIdentifier:
        raise Refusal(403, "bad_token", "not a lease token (epoch:generation:random)") from None


class Authorizer:
    def __init__(self, config: PoolConfig, store: GatewayStore) -> None:
        self.config, self.store, self.host = config, store, store.host

    def route(self, pool: str, name: str) -> str:
        """404 for another pool or a name that cannot be a container of this gateway's host."""
        if pool != self.config.pool.name:
            raise Refusal(404, "unknown_pool", f"this gateway serves pool {self.config.pool.name!r}")
        try:
            validate_container_name(name)
        except InvalidIdentifier:
            raise Refusal(404, "unknown_container", "no such container") from None
        if not 0 < local_slot(int(name.rsplit("-", 1)[1])) <= len(self.config.container.host_ports):
            raise Refusal(404, "unknown_container", "no such container", name)
        return name

    async def authorize(self, name: str, token: str) -> Target:
        """One round trip: the container's record, its lease and Redis' clock."""
        raw_record, raw_lease, now_ms = await self.store.record_and_lease(name)
        if raw_record is None:
            raise Refusal(404, "unknown_container", "no such container in the pool", name)
        try:
            record = decode.record(name, raw_record)
        except decode.BadValue:
            raise Refusal(404, "unknown_container", "the container's record is unreadable", name) from None
        if record.host != self.host:
            raise Refusal(404, "other_host", f"the container is served by the gateway of host {record.host!r}", name)
        lease = None
        if raw_lease is not None:
            try:
                lease = decode.lease(name, raw_lease)
            except decode.BadValue:
                lease = None
        fence = tokens.fingerprint(token)  # what Redis keeps: a value read from Redis is no bearer
        if lease is None or not hmac.compare_digest(lease.token, fence) or now_ms >= lease.expires_ms:
            raise Refusal(403, "not_current", "the token is not this container's current lease", name)
        return Target(
            name, fence, self.upstream(name), record.container_id, record.restarts, lease.worker, lease.test_run_id, lease.artifacts
        )

    async def last_outcome(self, name: str, token: str) -> str:
        """The outcome lease ``token`` on ``name`` was released with; "lost" when it ended without
        a release of its own (expired, reclaimed, its container gone)."""
        last, raw_record = await self.store.last_release(name)
        if last is None or last.decode(errors="replace") != token or raw_record is None:
            return "lost"
        try:
            return decode.record(name, raw_record).last_outcome or "lost"
        except decode.BadValue:
            return "lost"

    def upstream(self, name: str) -> str:
        return self.config.container.local_url(name)
