"""``ContainerLease``: what a job holds while it uses a container.

The holder fences itself: :meth:`ContainerLease.check` raises :class:`LeaseLost` once the last
successful renewal is older than ``fence_after_s`` (shorter than the TTL) on the monotonic
clock, or once the heartbeat learned that the lease was lost, or -- when the pool gave the lease
a ``confirm`` callable -- once Redis says the lease is no longer this token's. Job-side helpers
call it before every use of the endpoint, so a holder that was paused past its TTL makes no
further call, and neither does one whose lease ended early: its container vanished and was
replaced behind the same endpoint, or the lease was reclaimed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cinnamon_pool.clock import SYSTEM_CLOCK, Clock
from cinnamon_pool.errors import LeaseLost
from cinnamon_pool.model import Outcome


@dataclass
class ContainerLease:
    """A granted container. ``endpoint`` is the MCP URL a client posts to."""

    endpoint: str
    container_id: str
    name: str
    token: str
    test_run_id: str
    pool: str
    host: str = ""
    slot: int = 0
    fence_after_s: float = 20.0
    clock: Clock = field(default=SYSTEM_CLOCK, repr=False, compare=False)
    declared_outcome: Outcome | None = field(default=None, repr=False, compare=False)
    artifacts_root: str = field(default="", repr=False, compare=False)  # where a failed job's artifacts go
    artifacts_path: str | None = field(default=None, repr=False, compare=False)  # set once they were saved
    cleanup_seconds: float = field(default=0.0, repr=False, compare=False)  # time spent ending its MCP sessions
    # Asks Redis whether this token still holds the container: True, False, or None when Redis
    # does not answer (then the local deadline alone decides).
    confirm: Callable[[], bool | None] | None = field(default=None, repr=False, compare=False)
    _renewed_at: float = field(default=0.0, repr=False, compare=False)
    _lost_reason: str | None = field(default=None, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._renewed_at = self.clock.monotonic()

    @classmethod
    def from_grant(cls, pool: str, grant: dict[str, Any], fence_after_s: float, clock: Clock = SYSTEM_CLOCK) -> ContainerLease:
        return cls(
            endpoint=str(grant["endpoint"]),
            container_id=str(grant["container_id"]),
            name=str(grant["name"]),
            token=str(grant["token"]),
            test_run_id=str(grant["test_run_id"]),
            pool=pool,
            host=str(grant.get("host", "")),
            slot=int(grant.get("slot", 0)),
            fence_after_s=fence_after_s,
            clock=clock,
        )

    # -- the heartbeat reports here --------------------------------------------------------
    def mark_renewed(self, at: float | None = None) -> None:
        with self._lock:
            self._renewed_at = self.clock.monotonic() if at is None else at

    def mark_lost(self, reason: str) -> None:
        with self._lock:
            if self._lost_reason is None:
                self._lost_reason = reason

    def declare(self, outcome: Outcome | str) -> None:
        """Set the outcome the release reports, overriding the one inferred from exceptions."""
        self.declared_outcome = Outcome(outcome)

    # -- the job asks here -----------------------------------------------------------------
    @property
    def lost_reason(self) -> str | None:
        with self._lock:
            if self._lost_reason is not None:
                return self._lost_reason
            silent_for = self.clock.monotonic() - self._renewed_at
        if silent_for > self.fence_after_s:
            return f"no successful renewal for {silent_for:.1f} s (fence after {self.fence_after_s:.1f} s)"
        return None

    @property
    def valid(self) -> bool:
        return self.lost_reason is None

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless this holder may still use the endpoint: the local
        deadline first, then Redis itself when ``confirm`` is set (one HGET)."""
        reason = self.lost_reason
        if reason is None and self.confirm is not None and self.confirm() is False:
            self.mark_lost("the lease ended before its expiry (container gone, reclaimed or recycled)")
            reason = self.lost_reason
        if reason is not None:
            raise LeaseLost(self.name, reason)
