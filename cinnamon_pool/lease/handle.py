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
from cinnamon_pool.model import ARTIFACTS, Grant, Outcome

JOB_PHASE = "job"  # the job's own code runs (no tool call under way)
_CONTEXTS = {"browser_navigate": "page_navigation", "initialize": "session_start"}


def error_context(phase: str) -> str:
    """What the log's ``Context:`` calls a phase: the seed's names (page_navigation,
    session_start) where it has them, else the tool's own name (browser_click), or job."""
    return _CONTEXTS.get(phase, phase)


@dataclass(frozen=True)
class JobFigures:
    """What the release reports about the job's use of the browser (the RELEASED record)."""

    tool_calls: int = 0
    tool_p50_s: float | None = None
    tool_max_s: float | None = None
    console_errors: int = 0


@dataclass(frozen=True)
class SessionFigures:
    """What one MCP session of a job reports when it ends (returned by ``Browser.close``)."""

    cleanup_seconds: float = 0.0  # time spent ending the session (HTTP DELETE)
    artifacts_path: str | None = None  # where a failed job's artifacts were saved


class _Liveness:
    """The lease's moving parts, behind one lock: the heartbeat reports renewals and losses,
    the job may declare its outcome, and its sessions report their figures."""

    def __init__(self, renewed_at: float) -> None:
        self.lock = threading.Lock()
        self.renewed_at = renewed_at
        self.lost_reason: str | None = None
        self.declared: Outcome | None = None
        self.sessions: list[SessionFigures] = []
        self.phase = JOB_PHASE
        self.call_seconds: list[float] = []  # every tool call's latency, in order
        self.console_errors = 0  # of the pages left behind
        self.page: tuple[str, int] | None = None  # the current page: (URL, its console errors so far)
        self.trace_path = ""  # where the gateway keeps the lease's trace ("" = it records none)


@dataclass(frozen=True)
class ContainerLease:
    """A granted container. ``endpoint`` is the MCP URL a client posts to. Immutable: what
    changes while the job runs (renewals, a loss, the declared outcome, the sessions' figures)
    is reported through methods and read back through properties."""

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
    artifacts_root: str = field(default="", repr=False, compare=False)  # where a failed job's artifacts go
    artifacts: str = field(default="failure", repr=False, compare=False)  # when: failure, always or never
    # Asks Redis whether this token still holds the container: True, False, or None when Redis
    # does not answer (then the local deadline alone decides).
    confirm: Callable[[], bool | None] | None = field(default=None, repr=False, compare=False)
    _live: _Liveness = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.artifacts not in ARTIFACTS:
            raise ValueError(f"artifacts={self.artifacts!r}: use one of {', '.join(ARTIFACTS)}")
        object.__setattr__(self, "_live", _Liveness(self.clock.monotonic()))

    @classmethod
    def from_grant(cls, pool: str, grant: Grant, fence_after_s: float, clock: Clock = SYSTEM_CLOCK, **extra: Any) -> ContainerLease:
        return cls(
            endpoint=grant.endpoint,
            container_id=grant.container_id,
            name=grant.name,
            token=grant.token,
            test_run_id=grant.test_run_id,
            pool=pool,
            host=grant.host,
            slot=grant.slot,
            fence_after_s=fence_after_s,
            clock=clock,
            **extra,
        )

    # -- the heartbeat reports here --------------------------------------------------------
    def mark_renewed(self, at: float | None = None) -> None:
        with self._live.lock:
            self._live.renewed_at = self.clock.monotonic() if at is None else at

    def mark_lost(self, reason: str) -> None:
        with self._live.lock:
            if self._live.lost_reason is None:
                self._live.lost_reason = reason

    # -- the job and its helpers report here -----------------------------------------------
    def declare(self, outcome: Outcome | str) -> None:
        """Set the outcome the release reports, overriding the one inferred from exceptions."""
        with self._live.lock:
            self._live.declared = Outcome(outcome)

    def enter(self, phase: str) -> None:
        """What the job is doing now: a tool's name while the call is under way, else ``job``.
        A failure names it in the errors log (``Context:``)."""
        with self._live.lock:
            self._live.phase = phase

    @property
    def phase(self) -> str:
        return self._live.phase

    def record_call(self, seconds: float, page: tuple[str, int] | None = None, *, new_page: bool = False) -> None:
        """A tool call ended: its latency, and the page its answer described: (URL, console
        errors since that page loaded, a running count). A new URL, or a navigation, starts a
        new page; the errors of the page left behind are kept."""
        with self._live.lock:
            live = self._live
            live.call_seconds.append(seconds)
            if page is not None:
                if live.page is not None and (new_page or live.page[0] != page[0]):
                    live.console_errors += live.page[1]
                live.page = page

    @property
    def figures(self) -> JobFigures:
        with self._live.lock:
            calls = sorted(self._live.call_seconds)
            errors = self._live.console_errors + (self._live.page[1] if self._live.page else 0)
        if not calls:
            return JobFigures(console_errors=errors)
        return JobFigures(len(calls), calls[(len(calls) - 1) // 2], calls[-1], errors)

    def add_session(self, figures: SessionFigures) -> None:
        with self._live.lock:
            self._live.sessions.append(figures)

    @property
    def declared_outcome(self) -> Outcome | None:
        return self._live.declared

    @property
    def cleanup_seconds(self) -> float:
        """Time the job's sessions spent ending (their HTTP DELETEs), added up."""
        with self._live.lock:
            return sum(s.cleanup_seconds for s in self._live.sessions)

    @property
    def trace_path(self) -> str:
        """Where the gateway keeps this lease's Playwright trace (relative to the container host's
        logs.dir), as its answer to the session's ``initialize`` said; "" when it records none."""
        with self._live.lock:
            return self._live.trace_path

    def note_trace(self, path: str) -> None:
        """The gateway said where it keeps this lease's trace (``X-Cinnamon-Trace``)."""
        with self._live.lock:
            self._live.trace_path = path

    @property
    def artifacts_path(self) -> str | None:
        with self._live.lock:
            return next((s.artifacts_path for s in reversed(self._live.sessions) if s.artifacts_path), None)

    # -- the job asks here -----------------------------------------------------------------
    @property
    def lost_reason(self) -> str | None:
        with self._live.lock:
            if self._live.lost_reason is not None:
                return self._live.lost_reason
            silent_for = self.clock.monotonic() - self._live.renewed_at
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
