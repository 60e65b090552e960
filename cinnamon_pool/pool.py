"""``ContainerPool``: the pool as a Python object, for jobs and operators.

    pool = ContainerPool.from_env(os.environ)
    with pool.lease("test-run-123") as container:
        ...                      # container.endpoint is yours alone until the block ends
    print(pool.status())         # the dict `cinnamon-pool status --json` prints

``lease()`` is what ``@with_container`` runs: acquire (fair queue), heartbeat, release with
the outcome. It never talks to Docker.
"""

from __future__ import annotations

import datetime
import functools
import re
import secrets
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
from mcp.shared.exceptions import MCPError

from cinnamon_pool.browser import ToolError, artifact_folder, find_residue
from cinnamon_pool.clock import SYSTEM_CLOCK, Clock
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.connect import Client, redis_client
from cinnamon_pool.endpoints import check_endpoint
from cinnamon_pool.errors import BrowserSessionEnded, LeaseError, LeaseLost, StoreUnavailable, UntrustedEndpoint
from cinnamon_pool.events import EventKind
from cinnamon_pool.gateway import toolcalls
from cinnamon_pool.lease.handle import ContainerLease, error_context
from cinnamon_pool.lease.heartbeat import Heartbeat
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import ARTIFACTS, Artifacts, ContainerState, Holder, Outcome, client_of, keeps_artifacts
from cinnamon_pool.safefiles import private_folder, write_private

INFRA_ERRORS: tuple[type[BaseException], ...] = (
    LeaseLost,
    BrowserSessionEnded,
    MCPError,
    httpx.TransportError,
    httpx2.TransportError,
    ConnectionError,
    TimeoutError,
)


BROWSER_GONE = re.compile(r"target (page, context or browser )?(has been )?closed|browser has been closed|crash", re.IGNORECASE)


def classify(error: BaseException) -> Outcome:
    """``infra_error`` when the container (or the way to it) failed, else ``test_failed``.

    Infra: transport and MCP errors, timeouts against the endpoint, a lost lease, and tool
    errors that say the browser or its page died. Anything else (an assertion, a tool error
    about the page under test) is the test's failure and does not count against the container."""
    if isinstance(error, BaseExceptionGroup):
        return Outcome.INFRA_ERROR if any(classify(e) is Outcome.INFRA_ERROR for e in error.exceptions) else Outcome.TEST_FAILED
    if isinstance(error, ToolError):
        return Outcome.INFRA_ERROR if BROWSER_GONE.search(str(error)) else Outcome.TEST_FAILED
    if isinstance(error, INFRA_ERRORS):
        return Outcome.INFRA_ERROR
    cause = error.__cause__
    return classify(cause) if cause is not None and cause is not error else Outcome.TEST_FAILED


STATUS_WINDOW_MS = 3_600_000  # a container's error rate in `status`: the last hour's jobs


def _iso(ms: int) -> str:
    """Redis milliseconds as local ISO time, to the second."""
    return datetime.datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="seconds")


@dataclass(frozen=True)
class Failure:
    """Why a job failed, as the errors log says it: the exception (type and message) and the
    tool or phase under way (``Context:``); its traceback goes to the job's artifacts folder."""

    error: str = ""
    context: str = ""
    traceback: str = ""

    @classmethod
    def of(cls, error: BaseException, lease: ContainerLease) -> Failure:
        message = " ".join(str(error).split())  # one line; the log escapes what is left
        context = "lease" if isinstance(error, LeaseLost) else error_context(lease.phase)
        trace = "".join(traceback.format_exception(error))
        return cls(f"{type(error).__name__}: {message}" if message else type(error).__name__, context, trace)

    def save_traceback(self, lease: ContainerLease) -> str | None:
        """Write ``traceback.txt`` into the job's artifacts folder; the folder, or None."""
        if not self.traceback or not lease.artifacts_root or lease.artifacts == Artifacts.NEVER:
            return None
        folder = Path(lease.artifacts_path or artifact_folder(lease))
        try:
            write_private(private_folder(folder) / "traceback.txt", self.traceback)
        except OSError:
            return None  # a full disk must not hide the job's own error
        return str(folder)


@dataclass(frozen=True)
class Cleanup:
    seconds: float
    recycle: bool
    note: str


class ContainerPool:
    def __init__(self, config: PoolConfig, *, client: Client | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.clock = clock
        rules = config.rules
        # Before each use a job asks Redis whether its lease still holds, on connections with a
        # short timeout: an unreachable Redis must not stall the job (its local deadline decides).
        self._confirm_client = client or redis_client(config.redis, pool=config.pool.name, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.store = LeaseStore(
            client or redis_client(config.redis, pool=config.pool.name, socket_timeout=30, health_check_interval=30),
            config.pool.name,
            lease_ttl_s=rules.lease_ttl_s,
            max_lease_s=rules.max_lease_s,
            error_threshold=rules.error_threshold,
            clock=clock,
            wait_replicas=config.redis.replicas_to_wait,
            wait_timeout_ms=config.redis.wait_timeout_ms,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], config_path: str | None = None) -> ContainerPool:
        return cls(PoolConfig.load(config_path, environ))

    @property
    def name(self) -> str:
        return self.config.pool.name

    @contextmanager
    def lease(
        self, test_run_id: str | None = None, *, job_id: str = "", worker: str = "", timeout_s: float = 300.0, artifacts: str = "failure"
    ) -> Iterator[ContainerLease]:
        """Hold a container for the block; cleaned and released with the block's outcome, even on
        error. ``artifacts``: when the job's snapshot, screenshot, console log and Playwright trace
        are kept (failure, always or never)."""
        if artifacts not in ARTIFACTS:
            raise ValueError(f"artifacts={artifacts!r}: use one of {', '.join(ARTIFACTS)}")
        holder = Holder(test_run_id or job_id or f"local-{secrets.token_hex(6)}", job_id, worker, artifacts)
        grant = self.store.acquire(holder, timeout_s=timeout_s)
        try:
            check_endpoint(self.config, grant.endpoint)
        except UntrustedEndpoint:  # the token goes nowhere; the grant is given back
            with suppress(LeaseError, StoreUnavailable):
                self.store.release(grant.name, grant.token, Outcome.INFRA_ERROR)
            raise
        lease = ContainerLease.from_grant(
            self.name,
            grant,
            fence_after_s=self.store.lease_ttl_s * 2 / 3,
            clock=self.clock,
            artifacts_root=str(Path(self.config.logs.dir) / "artifacts"),
            artifacts=artifacts,
            confirm=functools.partial(self.store.holds, grant.name, grant.token, self._confirm_client),
        )
        outcome, failure = Outcome.OK, Failure()
        try:
            with Heartbeat(self.store, lease):
                try:
                    yield lease
                except BaseException as error:
                    outcome, failure = classify(error), Failure.of(error, lease)
                    raise
                finally:
                    figures = lease.figures  # the job's calls, not the canary's
                    cleanup = self._cleanup(lease, outcome)
        finally:
            # A lease lost meanwhile has nothing to give back: the supervisor recycles the container.
            with suppress(LeaseError):
                ended = lease.declared_outcome or outcome
                self.store.release(
                    lease.name,
                    lease.token,
                    ended,
                    recycle=cleanup.recycle,
                    cleanup_ms=cleanup.seconds * 1000,
                    cleanup_note=cleanup.note,
                    artifacts=failure.save_traceback(lease) or lease.artifacts_path or "",
                    error=failure.error,
                    context=failure.context,
                    figures=figures,
                    trace=lease.trace_path if keeps_artifacts(lease.artifacts, ended) else "",
                )

    def _cleanup(self, lease: ContainerLease, outcome: Outcome) -> Cleanup:
        """The job's sessions were ended by its helpers (HTTP DELETE; --isolated drops the browser
        with them), timed in ``lease.cleanup_seconds``: slower than ``cleanup_timeout_s`` sends the
        container to a restart. On a share of releases a canary session then checks that nothing
        stayed: residue, a failure or a time-out also restarts it. With prepared sessions the
        gateway runs the canary in the next job's session before it is offered (a fresh context
        in the running browser), so the job side does not."""
        rules = self.config.rules
        seconds = lease.cleanup_seconds
        if seconds > rules.cleanup_timeout_s:
            return Cleanup(seconds, True, f"ending the sessions took {seconds:.2f}s")
        if lease.host and self.store.preparing_hosts([lease.host]):
            return Cleanup(seconds, False, "sessions ended; the gateway checks the next session")
        if outcome is Outcome.INFRA_ERROR or not lease.valid or secrets.randbelow(10_000) >= rules.canary_share * 10_000:
            return Cleanup(seconds, False, "sessions ended")
        started = self.clock.monotonic()
        try:
            residue = find_residue(lease, timeout_s=rules.canary_timeout_s)
        except Exception as error:
            return Cleanup(seconds, True, f"canary failed: {type(error).__name__}: {error}"[:300])
        canary_s = self.clock.monotonic() - started
        if residue:
            return Cleanup(seconds, True, f"residue: {residue}")
        return Cleanup(seconds, False, f"canary clean in {canary_s:.2f}s")

    def status(self) -> dict[str, Any]:
        """The pool as ``cinnamon-pool status --json`` prints it (the documented contract)."""
        snapshot = self.store.snapshot()
        jobs = self._recent_jobs(snapshot.now_ms - STATUS_WINDOW_MS)
        tool_calls = toolcalls.summary(self.store.tool_call_figures(), snapshot.containers)
        containers = []
        for name, record in sorted(snapshot.containers.items()):
            lease = snapshot.leases.get(name)
            released, infra = jobs.get(name, (0, 0))
            calls = tool_calls.get(name)
            containers.append(
                {
                    "name": name,
                    "container_id": record.container_id,
                    "state": record.state.value,
                    "endpoint": record.endpoint,
                    "test_run_id": lease.test_run_id if lease else None,
                    "client": client_of(lease.worker) if lease else None,
                    "allocated_at": _iso(lease.granted_ms) if lease else None,
                    "lease_age_s": round((snapshot.now_ms - lease.granted_ms) / 1000, 1) if lease else None,
                    "memory_mb": snapshot.memory_mb.get(name),
                    "error_count": record.error_count,
                    "restarts": record.restarts,
                    "uptime_s": round(snapshot.now_ms / 1000 - record.started_at) if record.started_at else None,
                    "cpu_percent": snapshot.cpu_percent.get(name),
                    "error_rate": round(infra / released, 4) if released else None,
                    "last_cleanup_at": _iso(record.last_cleanup_ms) if record.last_cleanup_ms else None,
                    "mcp_p50_ms": calls["p50_ms"] if calls else None,
                    "mcp_p95_ms": calls["p95_ms"] if calls else None,
                    "mcp_error_rate": round(calls["errors"] / calls["calls"], 4) if calls else None,
                }
            )
        return {
            "pool": self.name,
            "total": len(snapshot.containers),
            "available": len(snapshot.free),
            "allocated": len(snapshot.leases),
            "restarting": snapshot.count(ContainerState.RESTARTING) + snapshot.count(ContainerState.STARTING),
            "preparing": snapshot.count(ContainerState.PREPARING),
            "unhealthy": snapshot.count(ContainerState.UNHEALTHY),
            "waiting": snapshot.waiting,
            "queue": [
                {
                    "test_run_id": waiter.test_run_id,
                    "job_id": waiter.job_id,
                    "worker": waiter.worker,
                    "waiting_s": round(max(0, snapshot.now_ms - waiter.queued_ms) / 1000, 1),
                }
                for waiter in (self.store.wait_queue() if snapshot.waiting else [])
            ],
            "draining": snapshot.draining,
            "containers": containers,
        }

    def _recent_jobs(self, since_ms: int, sample: int = 2000) -> dict[str, tuple[int, int]]:
        """Per container, (jobs released, of them infra errors) since ``since_ms``, from the event
        stream's newest ``sample`` events."""
        jobs: dict[str, tuple[int, int]] = {}
        for event in self.store.recent_events(since_ms, sample):
            if event.kind is EventKind.RELEASED:
                released, infra = jobs.get(event.name, (0, 0))
                jobs[event.name] = (released + 1, infra + (event.text("outcome") == Outcome.INFRA_ERROR))
        return jobs

    def stats(self, window_s: float = 3600.0, sample: int = 2000) -> dict[str, Any]:
        """Pool statistics from the event stream's newest ``sample`` events within ``window_s``:
        jobs per hour, wait time p50/p95 of the grants, the share of infra errors."""
        snapshot = self.store.snapshot()
        since_ms = snapshot.now_ms - int(window_s * 1000)
        waits: list[int] = []
        released = infra = 0
        for event in self.store.recent_events(since_ms, sample):
            if event.kind is EventKind.GRANTED:
                waits.append(event.number("wait_ms"))
            elif event.kind is EventKind.RELEASED:
                released += 1
                infra += event.text("outcome") == Outcome.INFRA_ERROR
        waits.sort()

        def percentile(q: float) -> float | None:
            return None if not waits else waits[min(len(waits) - 1, int(q * len(waits)))] / 1000

        return {
            "window_s": window_s,
            "jobs_per_hour": round(released * 3600 / window_s, 1),
            "wait_p50_s": percentile(0.50),
            "wait_p95_s": percentile(0.95),
            "infra_error_share": round(infra / released, 4) if released else 0.0,
            "utilization": round(len(snapshot.leases) / len(snapshot.containers), 4) if snapshot.containers else 0.0,
        }

    def drain(self, draining: bool = True) -> None:
        """Stop (or resume) granting; released containers go to restart instead of the pool."""
        self.store.set_draining(draining)
