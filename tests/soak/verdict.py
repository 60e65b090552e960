"""The soak's results and its verdict: what it counts, and what fails it (tests/soak)."""

from __future__ import annotations

import collections
import contextlib
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.pool import ContainerPool
from tests.faults.checker import check
from tests.faults.clock import steps
from tests.soak.settings import CONNECT_GRACE_S, CONVERGE_LIMIT_S, MIN_COMPLETED_SHARE, RETRIES
from tests.support import failure_of


class Summary:
    """The results of a :class:`tests.soak.runner.Soak` (a mixin of it: what it uses of the soak
    is declared here, and made by ``Soak``)."""

    client_count: int
    every_fault: bool
    faults: tuple[str, ...]
    client_pids: set[int]
    config: PoolConfig
    convergence: list[dict[str, Any]]
    duration_s: float
    history: Path
    pool: ContainerPool
    queue_client: redis.Redis
    seed: int
    submitted: list[str]

    def pool_containers(self) -> list[dict[str, Any]]:
        raise NotImplementedError("made by Soak")

    def wait_whole(self, fault: str, injected: float, over: Callable[[], bool] = ..., *, workers: bool = True) -> None:
        raise NotImplementedError("made by Soak")

    def unfinished(self) -> int:
        jobs = Job.fetch_many(self.submitted, connection=self.queue_client, serializer=JSONSerializer)
        return sum(job is None or job.get_status(refresh=False) not in {JobStatus.FINISHED, JobStatus.FAILED} for job in jobs)

    def summary(self, injected: collections.Counter[str]) -> dict[str, Any]:
        reasons: collections.Counter[str] = collections.Counter()
        completed, failed, lost, retried = set(), [], [], []
        for job_id in self.submitted:
            try:
                job = Job.fetch(job_id, connection=self.queue_client, serializer=JSONSerializer)
                status = job.get_status()
            except Exception:
                lost.append(job_id)
                continue
            if job.retries_left is not None and job.retries_left < RETRIES:
                retried.append(job_id)
            if status == JobStatus.FINISHED:
                completed.add(job_id)
            elif status == JobStatus.FAILED:
                failed.append(job_id)
                reasons[failure_reason(failure_of(job))] += 1
            else:
                lost.append(job_id)
        # Leaked: a container of the pool the registry does not know once the pool is whole again
        # (a container the supervisor just created for waiting jobs is not registered yet).
        self.wait_whole("end", time.monotonic(), workers=False)  # the workers were stopped by the drain
        registered = {c["container_id"] for c in self.pool.status()["containers"]}
        leaked = [c["Id"][:12] for c in self.pool_containers() if c["Id"] not in registered]
        report = check(self.history, max_lease_ms=int(self.config.rules.max_lease_s * 1000))
        double_grants = [v for v in report.violations if "held it" in v or "still used it" in v or "still served" in v]
        faults = (
            [json.loads(line) for line in (self.history / "faults.jsonl").read_text().splitlines()]
            if (self.history / "faults.jsonl").exists()
            else []
        )
        stepped = clock_steps(self.history, self.config.rules.lease_ttl_s * 1000)
        faults += stepped
        hit = {job: fault["fault"] for fault in faults for job in fault["jobs"]}
        unexplained = [job_id for job_id in failed if job_id not in hit]
        retried_unexplained = [job_id for job_id in retried if job_id not in hit]
        spared = [job_id for job_id in self.submitted if job_id not in hit]
        spared_completed = sum(job_id in completed for job_id in spared)
        measured = [c for c in self.convergence if c["fault"] not in {"start", "end"}]
        seconds = [c["seconds"] for c in measured if c["seconds"] is not None]
        slow = [f"{c['fault']} ({c['seconds']} s)" if c["seconds"] is not None else f"{c['fault']} (never)" for c in measured
                if c["seconds"] is None or c["seconds"] > CONVERGE_LIMIT_S]  # fmt: skip
        return {
            "duration_s": self.duration_s,
            "seed": self.seed,
            "faults_injected": dict(injected),
            "faults_never_run": [fault for fault in self.faults if not injected[fault]] if self.every_fault else [],
            "clock_steps": [{"mono": step["mono"], "size_ms": step["size_ms"], "jobs": len(step["jobs"])} for step in stepped],
            "jobs": {
                "submitted": len(self.submitted),
                "completed": len(completed),
                "failed": len(failed),
                "retried": len(retried),
                "retried_unexplained": len(retried_unexplained),  # a retry hides a failure: judged as one
                "retried_unexplained_ids": retried_unexplained[:20],
                "failed_by_reason": dict(reasons.most_common()),
                "failed_by_fault": dict(collections.Counter(hit[job_id] for job_id in failed if job_id in hit).most_common()),
                "failed_unexplained": len(unexplained),
                "failed_unexplained_ids": unexplained[:20],
                "hit_by_a_fault": sum(job_id in hit for job_id in self.submitted),
                "not_hit": len(spared),
                "not_hit_completed_share": round(spared_completed / len(spared), 4) if spared else 1.0,
                "lost": len(lost),
                "lost_ids": lost[:20],
            },
            "double_grants": len(double_grants),
            "violations": report.violations[:50],
            "leaked_containers": len(leaked),
            "convergence_s": {
                "limit": CONVERGE_LIMIT_S,
                "max": max(seconds, default=0.0),
                "p50": statistics.median(seconds) if seconds else 0.0,
                "over_limit": slow,
                "each": self.convergence,
            },
            "history": report.as_dict() | {"violations": len(report.violations)},
            "connect": self.connect_summary(faults),
        }

    def connect_summary(self, faults: list[dict[str, Any]]) -> dict[str, Any]:
        """The sessions on connect, from their clients' histories: opened (the lease named),
        completed (closed by DELETE), failed, and failed with no fault to explain it."""
        opened = completed = 0
        failures: list[dict[str, Any]] = []
        for pid in sorted(self.client_pids):
            path = self.history / f"client-{pid}.jsonl"
            for record in _history_lines(path):
                opened += record["op"] == "acquire" and record["phase"] == "ok"
                completed += record["op"] == "release" and record["phase"] == "ok"
                if record["phase"] in {"fail", "unknown"}:
                    failures.append(record)
        grace_ms = CONNECT_GRACE_S * 1000
        unexplained = [
            f"pid {r['pid']} {r['op']} at {r['mono']:.0f}: {r.get('detail', '')}"
            for r in failures
            if not any(f["mono"] <= r["mono"] <= f["end_mono"] + grace_ms for f in faults)
        ]
        return {
            "clients": self.client_count,
            "sessions_opened": opened,
            "sessions_completed": completed,
            "sessions_failed": len(failures),
            "killed_mid_session": sum(f["fault"] == "kill-client" for f in faults),
            "failed_unexplained": len(unexplained),
            "failed_unexplained_each": unexplained[:20],
        }


def clock_steps(history: Path, lease_ttl_ms: float) -> list[dict[str, Any]]:
    """The machine's wall-clock steps the clients' readings show (tests/faults/clock.py), each
    as the fault it is: lease time is Redis time, so a step forward ends the leases in flight
    early and a step back makes them last longer. The jobs in flight at it are hit by it, and
    its window lasts a lease TTL. Nobody injects it; it is found, and reported."""
    lines = [line for path in sorted(history.glob("client-*.jsonl")) for line in _history_lines(path)]
    spans: dict[str, list[float]] = {}
    for line in lines:
        if line.get("job"):
            span = spans.setdefault(line["job"], [line["mono"], line["mono"]])
            span[0], span[1] = min(span[0], line["mono"]), max(span[1], line["mono"])
    return [
        {
            "fault": "clock-step",
            "mono": at,
            "end_mono": at + lease_ttl_ms,
            "size_ms": round(size),
            "target": f"{size:+.0f} ms",
            "pids": [],
            "jobs": sorted(job for job, (first, last) in spans.items() if first <= at <= last),
        }
        for at, size in steps(lines)
    ]


def failure_reason(traceback: str) -> str:
    """A failure's exception type and message head (ids and numbers kept out, so reasons group).
    An exception group's traceback is drawn in a box: its border and margin are not the reason."""
    lines = [line.strip(" +-|") for line in traceback.splitlines()]
    last = next((line for line in reversed(lines) if line), "unknown")
    return "".join("#" if ch.isdigit() else ch for ch in last)[:120]


def _history_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text().splitlines() if path.exists() else []:
        with contextlib.suppress(ValueError):
            lines.append(json.loads(line))
    return lines


def verdict(results: dict[str, Any]) -> list[str]:
    """What fails the soak: each must-be-zero figure that is not, a share under its floor, and each
    fault after which the pool took longer than the limit to be whole again (named)."""
    jobs = results["jobs"]
    problems = []
    for key, value in (
        ("double grants", results["double_grants"]),
        ("lost jobs", jobs["lost"]),
        ("failed jobs no injected fault explains", jobs["failed_unexplained"]),
        ("jobs retried with no injected fault to explain it", jobs.get("retried_unexplained", 0)),
        ("leaked containers", results["leaked_containers"]),
        ("history violations", len(results["violations"])),
    ):
        if value:
            problems.append(f"{key}: {value}")
    if jobs["not_hit_completed_share"] < MIN_COMPLETED_SHARE:
        problems.append(
            f"of the {jobs['not_hit']} jobs no fault hit, {jobs['not_hit_completed_share']:.2%} completed (at least {MIN_COMPLETED_SHARE:.0%})"
        )
    if results.get("faults_never_run"):
        problems.append(f"fault kinds that never ran (--every-fault): {', '.join(results['faults_never_run'])}")
    if not results["history"]["served_by_containers"]:
        problems.append("the containers recorded no use: the history checker had no ground truth")
    for fault in results["convergence_s"]["over_limit"]:
        problems.append(f"not whole within {CONVERGE_LIMIT_S:g} s after {fault}")
    connect = results.get("connect") or {}
    if connect.get("clients"):
        if not connect["sessions_completed"]:
            problems.append(f"clients on connect: no session completed ({connect['sessions_opened']} opened)")
        if connect["failed_unexplained"]:
            problems.append(f"sessions on connect failed with no fault to explain them: {connect['failed_unexplained']}")
    return problems
