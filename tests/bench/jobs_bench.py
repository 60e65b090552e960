"""Section "jobs": what @with_container costs a job, what cleanup costs a release, and how
many realistic E2E jobs per second 2 forking workers push through 2 playwright-mcp containers.
(Job start to a ready endpoint, pool vs a fresh container, is the "pool" section's row.)"""

from __future__ import annotations

import os
import subprocess
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
from tests.support import rq_worker_command

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
        rows.append(Row("jobs", "canary check (a fresh session: new browser), p50", percentile(canaries, 50) * 1e3, None, "ms", ""))
        config_path = workdir / "flow.toml"
        c = supervisor.config
        config_path.write_text(
            f'[redis]\nurl = "{redis_url}"\n[pool]\nname = "{c.pool.name}"\n[rules]\ncanary_share = 0.1\n[logs]\ndir = "{workdir / "logs"}"\n'
        )
        queue = Queue("bench-flow", connection=store.redis, serializer=JSONSerializer)
        ids = [queue.enqueue("workers.jobs.sign_in_flow", f"user{i}@example.test", job_timeout=120).id for i in range(12)]
        env = {**os.environ, "CINNAMON_CONFIG": str(config_path)}
        command = rq_worker_command(redis_url, "bench-flow", root=ROOT)
        started = time.perf_counter()
        workers = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
        for worker in workers:
            worker.wait(timeout=600)
        wall = time.perf_counter() - started
        finished = sum(Job.fetch(i, connection=store.redis, serializer=JSONSerializer).is_finished for i in ids)
        rows.append(
            Row(
                "jobs",
                f"E2E sign-in jobs per second, 2 workers, 2 containers ({finished}/{len(ids)} passed)",
                finished / wall,
                None,
                "jobs/s",
                "",
            )
        )
    return rows


def run(redis_url: str, workdir: Path) -> list[Row]:
    rows = decorator_overhead(redis_url, workdir)
    print(f"  decorator overhead p50 {rows[0].value:.2f} ms; throughput {rows[1].value:.0f} vs {rows[1].baseline:.0f} jobs/s", flush=True)
    rows += cleanup_and_throughput(redis_url, workdir)
    return rows
