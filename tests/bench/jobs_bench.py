"""Section "jobs": what @with_container costs a job and what cleanup costs a release. (The whole
sign-in job, and E2E throughput through forking workers, are the "signin" section's rows.)"""

from __future__ import annotations

import os
import time
from pathlib import Path

import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from cinnamon_pool.browser import Browser, find_residue
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import ContainerRecord, ContainerState
from cinnamon_pool.pool import ContainerPool
from tests.bench.report import Row, percentile
from tests.bench.supervisor_bench import PLAYWRIGHT, supervised

ROOT = Path(__file__).resolve().parents[2]


def _job_seconds(client: redis.Redis, job_ids: list[str]) -> list[float]:
    jobs = [Job.fetch(i, connection=client, serializer=JSONSerializer) for i in job_ids]
    return [(j.ended_at - j.started_at).total_seconds() for j in jobs if j.ended_at and j.started_at]


def decorator_overhead(redis_url: str, workdir: Path, count: int = 300) -> list[Row]:
    client = redis.Redis.from_url(redis_url)
    store = LeaseStore(client, "benchjobs")
    store.register(ContainerRecord("container-001", "c" * 64, 1, "bench", "http://127.0.0.1:9/mcp", ContainerState.STARTING))
    config = workdir / "jobs.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_url}"\n[pool]\nname = "benchjobs"\n[rules]\ncanary_share = 0.0\n[logs]\ndir = "{workdir / "logs"}"\n'
    )
    os.environ["CINNAMON_CONFIG"] = str(config)
    results = {}
    for name in ("tests.bench.trivial_jobs.plain", "tests.bench.trivial_jobs.decorated"):
        queue = Queue(f"bench-{name.rsplit('.', 1)[1]}", connection=client, serializer=JSONSerializer)
        ids = [queue.enqueue(name, i).id for i in range(count)]
        started = time.perf_counter()
        SimpleWorker([queue], connection=client, serializer=JSONSerializer).work(burst=True, logging_level="WARNING")
        wall = time.perf_counter() - started
        results[name] = (_job_seconds(client, ids), count / wall)
    (plain, plain_rate), (decorated, decorated_rate) = results.values()
    overhead = percentile(decorated, 50) - percentile(plain, 50)
    return [
        Row(
            "jobs",
            "@with_container overhead per job, SimpleWorker, p50 (vs the job itself)",
            overhead * 1e3,
            percentile(plain, 50) * 1e3,
            "ms",
            "value <= 2",
        ),
        Row(
            "jobs",
            "trivial jobs per second, decorated (vs undecorated)",
            decorated_rate,
            plain_rate,
            "jobs/s",
            "ratio >= 0.8",
        ),
    ]


def cleanup_and_throughput(redis_url: str, workdir: Path) -> list[Row]:
    rows = []
    with supervised(redis_url, PLAYWRIGHT, 2, workdir, "3950-3959") as (supervisor, store, _engine):
        pool = ContainerPool(supervisor.config, client=store.redis)
        cleanups, canaries = [], []
        with pool.lease("bench-cleanup") as lease:
            for i in range(15):
                with Browser(lease) as browser:
                    browser.navigate(f"data:text/html,<h1>page {i}</h1>")
                    before = lease.cleanup_seconds
                cleanups.append(lease.cleanup_seconds - before)
            for _ in range(5):
                started = time.perf_counter()
                residue = find_residue(lease, timeout_s=30)
                canaries.append(time.perf_counter() - started)
                assert residue is None, residue
        rows.append(
            Row(
                "jobs",
                "cleanup: end the job's MCP session (DELETE), real playwright-mcp, p50",
                percentile(cleanups, 50) * 1e3,
                None,
                "ms",
                "value <= 50",
            )
        )
        rows.append(
            Row(
                "jobs",
                "canary check without a gateway (a fresh session, no keeper: a new browser), p50",
                percentile(canaries, 50) * 1e3,
                None,
                "ms",
                "value <= 5000",
            )
        )
    return rows


def run(redis_url: str, workdir: Path) -> list[Row]:
    rows = decorator_overhead(redis_url, workdir)
    print(f"  decorator overhead p50 {rows[0].value:.2f} ms; throughput {rows[1].value:.0f} vs {rows[1].baseline:.0f} jobs/s", flush=True)
    rows += cleanup_and_throughput(redis_url, workdir)
    return rows
