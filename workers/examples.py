"""The original plan's examples, against a running pool (`cinnamon-pool supervise` and
`cinnamon-pool gateway` from the same configuration, `CINNAMON_CONFIG`):

    python -m workers.examples basic        # enqueue sign-in jobs, run them with rq workers, print each result
    python -m workers.examples monitoring   # the status table (`status --watch` redraws it) and the metrics
    python -m workers.examples analysis     # `cinnamon-pool report` on the logs, and its HTML file

The fourth, the stress test, is `make soak DURATION=300` (tests/soak.py): faults injected while
jobs run, and a verdict. `make demo` starts a pool and runs the basic example's kind of jobs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from cinnamon_pool import ContainerPool, PoolConfig

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
QUEUE = "cinnamon-examples"
WATCHED = (  # the series an operator puts on a dashboard first
    "cinnamon_pool_containers{",
    "cinnamon_pool_waiting_acquirers{",
    "cinnamon_pool_container_memory_bytes{",
    "cinnamon_pool_container_cpu_percent{",
    "cinnamon_pool_container_jobs_total{",
    "cinnamon_pool_gateway_tool_call_seconds_count{",
    "cinnamon_pool_gateway_tool_call_seconds_sum{",
    "cinnamon_pool_gateway_tool_calls_total{",
    "cinnamon_pool_gateway_initialize_total{",
)


def basic(config: PoolConfig, jobs: int) -> int:
    """@with_container jobs (workers/jobs.py: sign_in_flow) run by two forking `rq worker`s."""
    client = redis.Redis.from_url(config.redis.url)
    queue = Queue(QUEUE, connection=client, serializer=JSONSerializer)
    run = time.strftime("%H%M%S")
    enqueued = [
        queue.enqueue("workers.jobs.sign_in_flow", f"user{i}@example.test", test_run_id=f"example-{run}-{i}", job_timeout=300)
        for i in range(jobs)
    ]
    print(f"enqueued {len(enqueued)} sign-in jobs on queue {QUEUE!r}; running 2 rq workers (--burst)", flush=True)
    command = [str(BIN / "rq"), "worker", "--burst", "-S", "json", "-w", "cinnamon_pool.worker.Worker", "--path", str(ROOT)]
    command += ["--url", config.redis.url, QUEUE]
    workers = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT) for _ in range(2)]
    for worker in workers:
        worker.wait(timeout=600)
    passed = 0
    for job in (Job.fetch(j.id, connection=client, serializer=JSONSerializer) for j in enqueued):
        if job.is_finished:
            result = job.return_value() or {}
            passed += 1
            print(f"  PASSED  {result.get('test_run_id')} on {result.get('container')} (screenshot {result.get('screenshot_bytes')} bytes)")
        else:
            latest = job.latest_result()
            reason = (latest.exc_string or "").strip().splitlines()[-1:] if latest else []
            print(f"  FAILED  {job.kwargs.get('test_run_id')}: {job.get_status()} {reason}")
    print(f"{passed} passed, {len(enqueued) - passed} failed")
    return 0 if passed == len(enqueued) else 1


def monitoring(config: PoolConfig) -> int:
    """What an operator watches: the status table, and the Prometheus metrics of the supervisor
    and of the gateway."""
    env = {**os.environ}
    subprocess.run([str(BIN / "cinnamon-pool"), "status"], env=env, check=True)
    status = ContainerPool(config).status()
    print(f"\n{status['available']} of {status['total']} containers available; {status['waiting']} job(s) waiting")
    sources = []
    if config.metrics.port:
        sources.append(("supervisor", f"http://{config.metrics.host}:{config.metrics.port}/metrics"))
    if config.gateway.enabled:
        sources.append(("gateway", f"{config.gateway.base_url}/metrics"))
    for name, url in sources:
        try:
            text = httpx.get(url, timeout=5).text
        except httpx.HTTPError as error:
            print(f"\n{name} metrics at {url}: {type(error).__name__} (is it running?)")
            continue
        lines = [line for line in text.splitlines() if line.startswith(WATCHED)]
        print(f"\n{name} metrics ({url}), the ones to watch:")
        for line in lines:
            print(f"  {line}")
    print("\n`cinnamon-pool status --watch` redraws the table every second until Ctrl-C.")
    return 0


def analysis(config: PoolConfig, html: Path) -> int:
    """`cinnamon-pool report`: recommendations first, then per container and per error; the
    self-contained HTML file beside it."""
    return subprocess.run([str(BIN / "cinnamon-pool"), "report", "--html", str(html)], env={**os.environ}, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.examples", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    examples = parser.add_subparsers(dest="example", required=True)
    basic_parser = examples.add_parser("basic", help="run sign-in jobs through the pool with rq workers")
    basic_parser.add_argument("--jobs", type=int, default=4)
    examples.add_parser("monitoring", help="the status table and the metrics")
    analysis_parser = examples.add_parser("analysis", help="cinnamon-pool report, and its HTML file")
    analysis_parser.add_argument("--html", type=Path, default=ROOT / ".run" / "report.html")
    args = parser.parse_args(argv)
    config = PoolConfig.load(None, os.environ)
    if args.example == "basic":
        return basic(config, args.jobs)
    if args.example == "monitoring":
        return monitoring(config)
    args.html.parent.mkdir(parents=True, exist_ok=True)
    return analysis(config, args.html)


if __name__ == "__main__":
    sys.exit(main())
