"""Section "traces": what a Playwright trace per lease costs, and the dashboard's runs page.

(a) The sign-in job (tests/bench/signin_bench.py) recording its trace (the default policy,
``artifacts="failure"``: recorded for the whole lease, kept if the job fails) against the same job
with ``artifacts="never"`` (the trace stopped at the hand-over), in rotation on one pool with
prepared sessions, real playwright-mcp at 0.5 CPU; then the same on a pool whose traces also have
the screencast (``container.artifacts_screenshots = true``). ``always`` is not the job's figure: it also
makes the job side save a snapshot, a screenshot and the console at every close (as it did
before traces). (b) Release to available (the container free again, with its next prepared
session) after an ``always`` job, whose trace is written, against after a ``never`` job.
(c) The runs page with 1,000 runs, rendered as HTML against the same list as plain JSON, from
the same log files.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from starlette.testclient import TestClient

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.dashboard.app import Dashboard
from cinnamon_pool.pool import ContainerPool
from tests.bench.report import Row, percentile
from tests.bench.signin_bench import at_rest, gateway, sign_in, wait_until_free
from tests.bench.supervisor_bench import PLAYWRIGHT, supervised
from tests.support import free_port

PORTS = "3970-3979"
SAMPLES = 12  # jobs per policy
SCREENCAST_SAMPLES = 8  # jobs per policy on the pool whose traces have the screencast
RUNS = 1000


def job_and_release(pool: ContainerPool, run: str, artifacts: str) -> tuple[float, float]:
    """The job's seconds, then its release to the pool being at rest again (prepared), seconds."""
    wait_until_free(pool, 2)
    started = time.perf_counter()
    with pool.lease(run, artifacts=artifacts) as lease:
        sign_in(lease, f"{run}@example.test")
    released = time.perf_counter()
    while not at_rest(pool, 2):
        time.sleep(0.005)
    return released - started, time.perf_counter() - released


def runs_log(root: Path, count: int) -> None:
    folder = root / "containers"
    folder.mkdir(parents=True, exist_ok=True)
    day = dt.date.today()
    start = dt.datetime.combine(day, dt.time(0, 0))
    records = []
    for i in range(count):
        at = start + dt.timedelta(seconds=30 * i)
        name, run = f"container-{i % 10 + 1:03d}", f"bench-run-{i}"
        records.append(f"[{at:%Y-%m-%d %H:%M:%S}] INFO  {name} | ALLOCATED\n  └─ Test Run: {run}\n  └─ Wait Time: 0.1s\n")
        outcome = "infra_error" if i % 7 == 0 else "ok"
        trace = f"\n  └─ Trace: artifacts/{day}/{run}/trace.zip" if outcome != "ok" else ""
        records.append(
            f"[{at + dt.timedelta(seconds=5):%Y-%m-%d %H:%M:%S}] INFO  {name} | RELEASED\n  └─ Test Run: {run}\n"
            f"  └─ Outcome: {outcome}\n  └─ Duration: 5.00s\n  └─ Tool Calls: 6\n  └─ Console Errors: 0{trace}\n"
        )
    (folder / f"container-usage-{day}.log").write_text("\n".join(records))


def page_times(client: TestClient, params: dict[str, str], samples: int = 15) -> list[float]:
    seconds = []
    for _ in range(samples):
        started = time.perf_counter()
        answer = client.get("/runs", params=params)
        seconds.append(time.perf_counter() - started)
        assert answer.status_code == 200
    return seconds


def run(redis_url: str, workdir: Path) -> list[Row]:
    listen = f"127.0.0.1:{free_port()}"
    kept: list[tuple[float, float]] = []
    never: list[tuple[float, float]] = []
    recorded: list[tuple[float, float]] = []
    with supervised(redis_url, PLAYWRIGHT, 2, workdir, PORTS, gateway=listen, canary_share=0.0) as (supervisor, _store, _engine):
        config = supervisor.config
        with gateway(redis_url, config, listen, workdir, prepared=True) as pool:
            job_and_release(pool, "bench-trace-warm", "never")  # the first job after start pays the JIT
            for i in range(SAMPLES):
                rotation = [("failure", recorded), ("never", never), ("always", kept)]
                for policy, into in rotation[i % 3 :] + rotation[: i % 3]:
                    into.append(job_and_release(pool, f"bench-trace-{policy}-{i}", policy))
                    print(f"  {policy} job {i + 1}/{SAMPLES}: {into[-1][0]:.2f} s, release to available {into[-1][1]:.2f} s", flush=True)
    screencast: list[tuple[float, float]] = []
    screencast_never: list[tuple[float, float]] = []
    options = {"artifacts_screenshots": True}
    with (
        supervised(redis_url, PLAYWRIGHT, 2, workdir, PORTS, gateway=listen, canary_share=0.0, container=options) as (supervisor, _, _),
        gateway(redis_url, supervisor.config, listen, workdir, prepared=True) as pool,
    ):
        job_and_release(pool, "bench-screencast-warm", "never")
        for i in range(SCREENCAST_SAMPLES):
            rotation = [("failure", screencast), ("never", screencast_never)]
            for policy, into in rotation[i % 2 :] + rotation[: i % 2]:
                into.append(job_and_release(pool, f"bench-screencast-{policy}-{i}", policy))
                print(f"  screencast {policy} job {i + 1}/{SCREENCAST_SAMPLES}: {into[-1][0]:.2f} s", flush=True)
    traced = list((workdir / "logs" / "artifacts").glob("*/bench-trace-always-*/trace.zip"))
    logs = workdir / "runs-logs"
    runs_log(logs, RUNS)
    with TestClient(Dashboard(PoolConfig.from_tables({"redis": {"url": redis_url}, "logs": {"dir": str(logs)}})).app()) as client:
        html = page_times(client, {})
        json_ = page_times(client, {"format": "json"})
    job_recorded, job_never = percentile([r[0] for r in recorded], 50), percentile([n[0] for n in never], 50)
    back_kept, back_never = percentile([k[1] for k in kept], 50) * 1000, percentile([n[1] for n in never], 50) * 1000
    return [
        Row(
            "traces",
            "sign-in job recording its trace (artifacts='failure', passed), p50, cpus 0.5 (vs artifacts='never')",
            job_recorded,
            job_never,
            "s",
            "ratio <= 1.15",
        ),
        Row(
            "traces",
            "the same job with the trace's screencast (container.artifacts_screenshots = true), p50, cpus 0.5 (vs 'never')",
            percentile([r[0] for r in screencast], 50),
            percentile([n[0] for n in screencast_never], 50),
            "s",
            "ratio <= 1.15",
        ),
        Row(
            "traces",
            f"release to available after 'always' ({len(traced)} traces written), p50 (vs after 'never')",
            back_kept,
            back_never,
            "ms",
            "ratio <= 1.5",
        ),
        Row("traces", "trace written at release: added to release-to-available, p50", back_kept - back_never, None, "ms", "value <= 300"),
        Row(
            "traces",
            f"dashboard runs page, {RUNS} runs, HTML, p50 (vs the same list as JSON)",
            percentile(html, 50) * 1000,
            percentile(json_, 50) * 1000,
            "ms",
            "value <= 300",
        ),
    ]
