"""Leader election: one active supervisor per (pool, Docker host), a second one stands by.

Timings in the spirit of Kubernetes' leader election: the leader key lives ``lease_s``
(15 s) and is renewed every ``retry_s`` (2 s); a leader that could not renew for
``renew_deadline_s`` (10 s) stops acting before its key can expire, and a standby claims the
key once it has expired. A deposed leader that wakes up (SIGSTOP, long GC, lost network) has
its writes refused by the scripts, which compare its id with the key's value.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket

from cinnamon_pool.clock import SYSTEM_CLOCK, Clock
from cinnamon_pool.errors import StoreError
from cinnamon_pool.lease.store import LeaseStore


class LeaderElection:
    def __init__(
        self,
        store: LeaseStore,
        *,
        lease_s: float = 15.0,
        renew_deadline_s: float = 10.0,
        retry_s: float = 2.0,
        identity: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not retry_s < renew_deadline_s < lease_s:
            raise ValueError(f"leader timings must satisfy retry < renew deadline < lease: {retry_s}, {renew_deadline_s}, {lease_s}")
        self.store = store
        self.lease_s, self.renew_deadline_s, self.retry_s = lease_s, renew_deadline_s, retry_s
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.clock = clock
        self._renewed_at: float | None = None  # monotonic time of the last successful claim or renewal
        store.leader_id = self.identity  # from now on every supervisor write is checked against the key

    @property
    def leading(self) -> bool:
        """True while a claim or renewal succeeded within the renew deadline."""
        return self._renewed_at is not None and self.clock.monotonic() - self._renewed_at < self.renew_deadline_s

    def step(self) -> bool:
        """Claim, or renew when due; returns whether this supervisor may act now."""
        now = self.clock.monotonic()
        if self._renewed_at is not None and now - self._renewed_at < self.retry_s:
            return True
        try:
            held = self.store.leadership("renew" if self._renewed_at is not None else "claim", self.identity, self.lease_s)
        except StoreError:
            held = None  # unknown: keep acting only until the renew deadline
        if held:
            self._renewed_at = now
        elif held is False:
            self._renewed_at = None
        return self.leading

    def resign(self) -> None:
        if self._renewed_at is not None:
            with contextlib.suppress(StoreError):  # else the key expires by itself
                self.store.leadership("resign", self.identity, self.lease_s)
        self._renewed_at = None
