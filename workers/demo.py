"""`make demo`: start the pool, run real jobs through two rq workers, show what happened.

Starts `cinnamon-pool supervise` (which starts 2 playwright-mcp containers) and `cinnamon-pool
gateway` (the jobs' way in to the browsers), enqueues 6 jobs that each open a page in a leased
browser and read its accessibility snapshot, runs two forking `rq worker --burst` processes, prints the pool status, the job results and where the
logs are, then stops everything it started (supervisor, gateway, workers, the pool's containers).
Redis and dockerd, started by `make services`, keep running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from cinnamon_pool import ContainerPool, PoolConfig

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CONFIG = ROOT / "compose" / "pool.local.toml"
PAGES = [
    ("Login", "<h1>Sign in</h1><label>Email <input type=email></label><button>Continue</button>"),
    ("Cart", "<h1>Your cart</h1><ul><li>Cinnamon roll</li><li>Coffee</li></ul><button>Checkout</button>"),
    ("Search", "<h1>Search</h1><input type=search aria-label=Query><button>Go</button>"),
    ("Profile", "<h1>Profile</h1><p>Member since 2024</p><a href='#'>Edit</a>"),
    ("Orders", "<h1>Orders</h1><table><tr><th>Order</th><th>Total</th></tr><tr><td>#1</td><td>9.90</td></tr></table>"),
    ("Help", "<h1>Help</h1><details><summary>Shipping</summary>Two days.</details>"),
]


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def wait_for(condition, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"[demo] gave up: {what} within {seconds:.0f} s")
        time.sleep(0.2)


def main() -> int:
    env = {**os.environ, "CINNAMON_CONFIG": os.environ.get("CINNAMON_CONFIG", str(CONFIG))}
    config = PoolConfig.load(None, env)
    pool = ContainerPool(config)
    client = redis.Redis.from_url(config.redis.url)
    log_dir = (ROOT / config.logs.dir) if not Path(config.logs.dir).is_absolute() else Path(config.logs.dir)

    say(f"starting the supervisor: pool {config.pool.name!r}, {config.pool.initial_size} x {config.container.image}")
    supervisor_log = (ROOT / ".run" / "demo-supervise.log").open("w")
    supervisor = subprocess.Popen([BIN / "cinnamon-pool", "supervise"], env=env, cwd=ROOT, stdout=supervisor_log, stderr=subprocess.STDOUT)
    say(f"starting the gateway on {config.gateway.listen}: the jobs' one way in to the browsers")
    gateway_log = (ROOT / ".run" / "demo-gateway.log").open("w")
    gateway = subprocess.Popen([BIN / "cinnamon-pool", "gateway"], env=env, cwd=ROOT, stdout=gateway_log, stderr=subprocess.STDOUT)
    workers: list[subprocess.Popen[str]] = []
    try:
        started = time.monotonic()
        engine = docker.from_env()

        def pool_ready() -> bool:  # every available record names a running container (none left from an earlier run)
            running = {c["Id"] for c in engine.api.containers(filters={"label": f"cinnamon.pool={config.pool.name}"})}
            status = pool.status()
            live = [c for c in status["containers"] if c["state"] == "available" and c["container_id"] in running]
            return len(live) >= config.pool.initial_size

        wait_for(pool_ready, 120, "containers ready")
        say(f"{pool.status()['available']} containers ready after {time.monotonic() - started:.1f} s")

        queue = Queue("cinnamon-demo", connection=client, serializer=JSONSerializer)
        run = time.strftime("%H%M%S")
        jobs = [
            queue.enqueue(
                "workers.jobs.snapshot_page", f"<title>{title}</title>{body}", test_run_id=f"demo-{run}-{title.lower()}", job_timeout=300
            )
            for title, body in PAGES
        ]
        say(f"enqueued {len(jobs)} jobs; starting 2 rq workers (forking, --burst)")
        command = [str(BIN / "rq"), "worker", "--burst", "-S", "json", "-w", "cinnamon_pool.worker.Worker"]
        command += ["--path", str(ROOT), "--url", config.redis.url, "cinnamon-demo"]
        workers = [
            subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)
        ]
        while any(w.poll() is None for w in workers):
            status = pool.status()
            done = sum(Job.fetch(j.id, connection=client, serializer=JSONSerializer).is_finished for j in jobs)
            say(f"jobs finished {done}/{len(jobs)}; containers allocated {status['allocated']}, available {status['available']}")
            time.sleep(1)

        print()
        say("job results")
        passed = 0
        for job in jobs:
            job = Job.fetch(job.id, connection=client, serializer=JSONSerializer)
            if job.is_finished:
                result = job.return_value() or {}
                heading = re.search(r'heading "([^"]+)"', result.get("snapshot", ""))
                passed += 1
                print(
                    f"  PASSED  {result.get('test_run_id')}  on {result.get('container')}  saw heading {heading.group(1) if heading else '?'!r}"
                )
            else:
                latest = job.latest_result()
                print(
                    f"  FAILED  {job.kwargs.get('test_run_id')}  {job.get_status()}: {(latest.exc_string or '').strip().splitlines()[-1:] if latest else ''}"
                )
        say(f"{passed} passed, {len(jobs) - passed} failed")

        usage = log_dir / "containers" / f"container-usage-{time.strftime('%Y-%m-%d')}.log"
        wait_for(lambda: usage.exists() and usage.read_text().count("| RELEASED") >= len(jobs), 30, "usage log written")
        print()
        say("pool status (cinnamon-pool status --json)")
        print(json.dumps(pool.status(), indent=2))
        print()
        say(f"logs: {log_dir / 'containers'}")
        for path in sorted((log_dir / "containers").glob("*.log")):
            print(f"  {path}")
        return 0 if passed == len(jobs) else 1
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
        for process in (supervisor, gateway):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        supervisor_log.close()
        gateway_log.close()
        removed = 0
        for container in docker.from_env().containers.list(all=True, filters={"label": f"cinnamon.pool={config.pool.name}"}):
            container.remove(force=True)
            removed += 1
        for name in pool.status()["containers"]:
            pool.store.deregister(name["name"], "demo finished")
        say(f"stopped the supervisor, the gateway and the workers, removed {removed} pool container(s)")


if __name__ == "__main__":
    sys.exit(main())
