"""@with_container under real rq workers, the forking one and SimpleWorker, on a stand-in endpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import ContainerRecord, ContainerState, Holder
from cinnamon_pool.worker import Worker
from tests.conftest import ROOT, trusted_gateway
from tests.support import burst, failure_of, returned, stream_entries

pytestmark = pytest.mark.redis
BIN = Path(sys.executable).parent
WORKERS = {"forking": [], "simple": ["-w", "rq.worker.SimpleWorker"]}


@pytest.fixture(params=sorted(WORKERS))
def worker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pool(real_redis: redis.Redis, redis_server: str, fake_endpoint: str, tmp_path: Path) -> tuple[LeaseStore, dict[str, str], Path]:
    store = LeaseStore(real_redis, "jobs")
    store.register(ContainerRecord("container-001", "b" * 64, 1, "host-a", f"{fake_endpoint}/mcp", ContainerState.STARTING))
    logs = tmp_path / "logs"
    config = tmp_path / "pool.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_server}"\n[pool]\nname = "jobs"\n{trusted_gateway(fake_endpoint)}[rules]\ncanary_share = 1.0\n[logs]\ndir = "{logs}"\n'
    )
    return store, {**os.environ, "CINNAMON_CONFIG": str(config)}, logs


def run_jobs(
    env: dict[str, str],
    url: str,
    kind: str,
    calls: list[tuple[str, tuple[object, ...], dict[str, object]]],
    output: list[str] | None = None,
    worker_options: tuple[str, ...] = (),
    **options: Any,
) -> list[Job]:
    """Enqueue ``calls`` (``options`` go to rq's enqueue; job_timeout 60 s unless given), run a
    burst worker of ``kind`` (with ``worker_options``) over them; its output lands in ``output``."""
    client = redis.Redis.from_url(url)
    queue = Queue("jobs", connection=client, serializer=JSONSerializer)
    options.setdefault("job_timeout", 60)
    jobs = [queue.enqueue(name, *args, **options, **kwargs) for name, args, kwargs in calls]
    command = [
        str(BIN / "rq"),
        "worker",
        "--burst",
        "-S",
        "json",
        *WORKERS[kind],
        "--path",
        str(ROOT),
        "--url",
        url,
        *worker_options,
        "jobs",
    ]
    ran = burst(command, env, client, [job.id for job in jobs])
    if output is not None:
        output.append(ran)
    return [Job.fetch(job.id, connection=client, serializer=JSONSerializer) for job in jobs]


def test_a_test_failure_does_not_count_against_the_container_and_leaves_artifacts(
    pool: tuple[LeaseStore, dict[str, str], Path], redis_server: str, worker_kind: str
) -> None:
    store, env, logs = pool
    passed, failed = run_jobs(
        env,
        redis_server,
        worker_kind,
        [("tests.jobs.open_page", ("",), {"test_run_id": "run-pass"}), ("tests.jobs.open_page", ("assert",), {"test_run_id": "run-fail"})],
    )
    assert passed.get_status() == JobStatus.FINISHED and "Checkout" not in failure_of(passed)
    assert failed.get_status() == JobStatus.FAILED and "AssertionError" in failure_of(failed)
    record = store.snapshot().containers["container-001"]
    assert record.error_count == 0 and record.state is ContainerState.AVAILABLE, "an assertion in the test is not the container's fault"
    artifacts = list((logs / "artifacts").glob("*/*"))
    assert [a.name for a in artifacts] == ["run-fail"], "artifacts for the failed job only"
    assert (artifacts[0] / "snapshot.md").read_text().count("Page URL") >= 1
    assert (artifacts[0] / "screenshot.png").read_bytes().startswith(b"\x89PNG")
    released = stream_entries(store.redis, store.keys.events, b"released")
    assert [f[b"outcome"] for f in released] == [b"ok", b"test_failed"]
    assert released[1][b"artifacts"].decode() == str(artifacts[0])
    assert (released[1][b"error"], released[1][b"context"]) == (b"AssertionError: expected the heading 'Thank you'", b"job")
    assert "raise AssertionError" in (artifacts[0] / "traceback.txt").read_text(), "the traceback goes to the artifacts"
    assert all(f[b"cleanup_note"].startswith(b"canary clean in ") and float(f[b"cleanup_ms"]) > 0 for f in released), released


def test_artifacts_always_or_never_and_every_release_carries_the_jobs_figures(
    pool: tuple[LeaseStore, dict[str, str], Path], redis_server: str
) -> None:
    store, env, logs = pool
    jobs = run_jobs(
        env,
        redis_server,
        "forking",
        [
            ("tests.jobs.open_page_keeping_artifacts", ("",), {"test_run_id": "run-kept"}),
            ("tests.jobs.open_page_keeping_nothing", ("assert",), {"test_run_id": "run-bare"}),
        ],
    )
    assert [j.get_status() for j in jobs] == [JobStatus.FINISHED, JobStatus.FAILED]
    kept = [a.name for a in (logs / "artifacts").glob("*/*")]
    assert kept == ["run-kept"], "always: a passing job's artifacts too; never: not even a failed job's"
    folder = next((logs / "artifacts").glob("*/run-kept"))
    assert {p.name for p in folder.iterdir()} >= {"snapshot.md", "screenshot.png"}
    released = stream_entries(store.redis, store.keys.events, b"released")
    assert [f[b"tool_calls"] for f in released] == [b"2", b"2"], "navigate and snapshot; saving artifacts is not the job's"
    assert all(0 < float(f[b"tool_p50_ms"]) <= float(f[b"tool_max_ms"]) for f in released), released
    assert b"artifacts" not in released[1], "never: no traceback either (a field with no value is not written)"


def test_three_jobs_failing_on_a_broken_endpoint_send_the_container_to_restart(
    pool: tuple[LeaseStore, dict[str, str], Path], redis_server: str, fake_endpoint: str, worker_kind: str
) -> None:
    store, env, _logs = pool
    httpx.post(f"{fake_endpoint}/_fake/mode", json={"mode": "fail"}, timeout=5).raise_for_status()
    jobs = run_jobs(env, redis_server, worker_kind, [("tests.jobs.open_page", ("",), {}) for _ in range(3)])
    assert [j.get_status() for j in jobs] == [JobStatus.FAILED] * 3
    released = stream_entries(store.redis, store.keys.events, b"released")
    assert {(f[b"outcome"], f[b"context"]) for f in released} == {(b"infra_error", b"page_navigation")}, released
    record = store.snapshot().containers["container-001"]
    assert record.error_count == 3 and record.state is ContainerState.RESTARTING


def test_an_endpoint_that_accepts_and_never_answers_fails_the_job_as_an_infra_error_in_time(
    pool: tuple[LeaseStore, dict[str, str], Path], redis_server: str, fake_endpoint: str, worker_kind: str
) -> None:
    store, env, _logs = pool
    httpx.post(f"{fake_endpoint}/_fake/mode", json={"mode": "hang"}, timeout=5).raise_for_status()
    [job] = run_jobs(env, redis_server, worker_kind, [("tests.jobs.open_page_within", (1.0,), {})])
    assert job.get_status() == JobStatus.FAILED
    # The job's own run, as rq recorded it: a plain `rq worker` may then take 60 s more to exit
    # (rq's command-channel race at unsubscribe, see cinnamon_pool/worker.py), which is not the job.
    assert job.started_at is not None and job.ended_at is not None
    ran_s = (job.ended_at - job.started_at).total_seconds()
    assert ran_s < 30, f"the job gave up on the silent endpoint after {ran_s:.1f} s instead of hanging"
    released = stream_entries(store.redis, store.keys.events, b"released")
    assert [f[b"outcome"] for f in released] == [b"infra_error"], "the silence counts against the container"
    assert released[0][b"context"] == b"session_start" and released[0][b"error"], released[0]
    assert store.snapshot().containers["container-001"].error_count == 1


def test_residue_found_by_the_canary_sends_the_container_to_restart(
    pool: tuple[LeaseStore, dict[str, str], Path], redis_server: str, fake_endpoint: str, worker_kind: str
) -> None:
    store, env, _logs = pool
    httpx.post(f"{fake_endpoint}/_fake/mode", json={"mode": "residue"}, timeout=5).raise_for_status()
    (job,) = run_jobs(env, redis_server, worker_kind, [("tests.jobs.open_page", ("",), {})])
    assert job.get_status() == JobStatus.FINISHED, "the job itself passed"
    assert store.snapshot().containers["container-001"].state is ContainerState.RESTARTING
    released = stream_entries(store.redis, store.keys.events, b"released")
    assert released[-1][b"cleanup_note"] == b"residue: cookies=1"


def test_one_sigterm_lets_the_job_finish_and_release(
    pool: tuple[LeaseStore, dict[str, str], Path], redis_server: str, tmp_path: Path
) -> None:
    store, env, _logs = pool
    client = redis.Redis.from_url(redis_server)
    job = Queue("jobs", connection=client, serializer=JSONSerializer).enqueue(
        "tests.jobs.hold_and_sleep", 1.5, str(tmp_path / "pid"), job_timeout=60
    )
    # the README's worker: plain rq 3.0 may spend 60 s of a warm shutdown unsubscribing (tests/support.py burst)
    command = [str(BIN / "rq"), "worker", "-S", "json", "-w", "cinnamon_pool.worker.Worker", "--path", str(ROOT), "--url", redis_server]
    worker = subprocess.Popen([*command, "jobs"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (tmp_path / "pid").exists():
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.02)
    worker.send_signal(signal.SIGTERM)  # warm shutdown: finish the current job, then stop
    assert worker.wait(timeout=90) == 0
    job = Job.fetch(job.id, connection=client, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FINISHED
    snapshot = store.snapshot()
    assert snapshot.leases == {} and snapshot.free == ["container-001"], "the lease was released"


def test_an_exhausted_pool_can_requeue_the_job_instead_of_holding_the_worker(
    pool: tuple[LeaseStore, dict[str, str], Path], redis_server: str
) -> None:
    store, env, _logs = pool
    client = redis.Redis.from_url(redis_server)
    first = Queue("jobs", connection=client, serializer=JSONSerializer).enqueue("tests.jobs.open_page", "")
    run_jobs(env, redis_server, "forking", [])
    held = store.acquire(Holder("someone-else"), timeout_s=1)
    output: list[str] = []
    (job,) = run_jobs(
        env,
        redis_server,
        "forking",
        [("tests.jobs.requeue_when_busy", (), {})],
        output,
        meta={"team": "checkout"},
        retry=Retry(max=2, interval=[5, 10]),
        result_ttl=600,
        ttl=900,
        failure_ttl=1200,
        depends_on=first.id,
        description="sign in as alice",
    )
    assert job.get_status() == JobStatus.FINISHED, output
    again = returned(job)["requeued_as"]
    registry = ScheduledJobRegistry("jobs", connection=client, serializer=JSONSerializer)
    assert again in registry.get_job_ids(), "the copy waits in the scheduled registry"
    copy = Job.fetch(again, connection=client, serializer=JSONSerializer)
    assert copy.meta == {"team": "checkout", "cinnamon_requeued_from": job.id}, copy.meta
    assert (copy.retries_left, copy.retry_intervals) == (2, [5, 10]), "the copy keeps the retries left"
    assert (copy.result_ttl, copy.ttl, copy.failure_ttl, copy.timeout) == (600, 900, 1200, 60), "and its TTLs and timeout"
    assert copy._dependency_ids == [first.id] and copy.description == "sign in as alice", (
        "and its dependencies (as stored: rq empties the set once met)"
    )
    assert f"requeued as {again}" in output[0], "the message goes through logging, to rq's log: " + output[0][-2000:]
    store.release(held.name, held.token)


def test_the_bare_decorator_runs_the_job_as_the_called_one_does(pool: tuple[LeaseStore, dict[str, str], Path], redis_server: str) -> None:
    store, env, _logs = pool
    bare, called = run_jobs(env, redis_server, "forking", [("tests.jobs.open_page_bare", ("",), {}), ("tests.jobs.open_page", ("",), {})])
    assert bare.get_status() == called.get_status() == JobStatus.FINISHED, (bare.exc_info, called.exc_info)
    assert returned(bare) == returned(called), "bare and called decorators inject the same container"
    assert store.snapshot().free == ["container-001"], "both released"


def test_the_acquire_wait_never_outlives_the_jobs_rq_timeout(pool: tuple[LeaseStore, dict[str, str], Path], redis_server: str) -> None:
    """acquire_timeout_s=300 on a job with an 8 s rq timeout: the job ends with PoolExhausted after
    half of it, not killed by rq, and the worker says once why it waited less."""
    store, env, _logs = pool
    held = store.acquire(Holder("someone-else"), timeout_s=1)
    output: list[str] = []
    (job,) = run_jobs(env, redis_server, "forking", [("tests.jobs.wait_long_for_a_container", (), {})], output, job_timeout=8)
    store.release(held.name, held.token)
    assert job.get_status() == JobStatus.FAILED
    assert "PoolExhausted" in (job.exc_info or "") and "after 4." in (job.exc_info or ""), job.exc_info
    assert "JobTimeoutException" not in (job.exc_info or ""), "rq killed the job while it waited"
    assert output[0].count("waits at most 4 s for a container, not acquire_timeout_s=300 s") == 1, output[0][-2000:]


def test_rqs_own_logging_options_govern_the_job_sides_messages(pool: tuple[LeaseStore, dict[str, str], Path], redis_server: str) -> None:
    """The same capped wait as above under `rq worker --logging_level ERROR`: the warning is rq's
    to show or hide, so it is gone, and the job fails the same way."""
    store, env, _logs = pool
    held = store.acquire(Holder("someone-else"), timeout_s=1)
    output: list[str] = []
    call: list[tuple[str, tuple[object, ...], dict[str, object]]] = [("tests.jobs.wait_long_for_a_container", (), {})]
    (job,) = run_jobs(env, redis_server, "forking", call, output, ("--logging_level", "ERROR"), job_timeout=8)
    store.release(held.name, held.token)
    assert "PoolExhausted" in (job.exc_info or ""), job.exc_info
    assert "waits at most" not in output[0], output[0][-2000:]


# `rq worker -w cinnamon_pool.worker.Worker`: a job read from Redis runs only if its function is in
# a module of [worker] allowed_functions, and pickled jobs are refused at the start.
GUARDED = ("-w", "cinnamon_pool.worker.Worker")


def test_a_job_naming_a_function_outside_the_allowed_modules_fails_unrun(
    pool: tuple[LeaseStore, dict[str, str], Path],
    redis_server: str,
    tmp_path: Path,
) -> None:
    _store, env, _logs = pool
    config = Path(env["CINNAMON_CONFIG"])
    config.write_text(config.read_text() + '[worker]\nallowed_functions = ["tests.jobs"]\n')
    planted = tmp_path / "planted"
    output: list[str] = []
    allowed, forged, lookalike = run_jobs(
        env,
        redis_server,
        "forking",
        [
            ("tests.jobs.open_page", ("",), {"test_run_id": "run-allowed"}),
            ("os.system", (f"touch {planted}",), {}),  # what anyone who can write to Redis could enqueue
            ("tests.jobs_lookalike.run", (), {}),  # a module whose name only begins like an allowed one
        ],
        output,
        worker_options=GUARDED,
    )
    assert allowed.get_status() == JobStatus.FINISHED, output
    assert not planted.exists(), "the forged job ran"
    for job, name in ((forged, "os.system"), (lookalike, "tests.jobs_lookalike.run")):
        assert job.get_status() == JobStatus.FAILED
        assert f"RefusedFunction: '{name}' is not in a module of [worker] allowed_functions (tests.jobs)" in (failure_of(job))
    assert "refused" in output[0] and "any function a job names" not in output[0]


def test_the_guarded_worker_refuses_picklers_in_one_line_and_warns_with_no_allow_list(
    pool: tuple[LeaseStore, dict[str, str], Path],
    redis_server: str,
) -> None:
    _store, env, _logs = pool
    command = [str(BIN / "rq"), "worker", "--burst", *GUARDED, "--path", str(ROOT), "--url", redis_server, "jobs"]
    pickled = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert pickled.returncode == 1
    assert "does not run pickled jobs" in pickled.stderr and "-S json" in pickled.stderr
    assert "Traceback" not in pickled.stderr, pickled.stderr
    output: list[str] = []
    (job,) = run_jobs(env, redis_server, "forking", [("tests.jobs.open_page", ("",), {})], output, worker_options=GUARDED)
    assert job.get_status() == JobStatus.FINISHED
    assert "any function a job names in Redis can run here" in output[0]


def test_a_worker_told_to_stop_leaves_its_command_channel_at_once_whoever_reads_the_reply_first(redis_server: str) -> None:
    """rq's own order (UNSUBSCRIBE, then stop the listener) hangs for the listener's 60 s wait
    when the listener reads the reply before the flag is cleared; the main thread being
    preempted right after sending is simulated by a pause there."""
    client = redis.Redis.from_url(redis_server)
    worker = Worker([Queue("jobs", connection=client, serializer=JSONSerializer)], connection=client, serializer=JSONSerializer)
    worker.subscribe()  # type: ignore[no-untyped-call]
    pubsub = worker.pubsub
    assert pubsub is not None
    sent = pubsub.unsubscribe

    def sent_then_preempted(*args: Any, **kwargs: Any) -> None:
        sent(*args, **kwargs)  # type: ignore[no-untyped-call]
        time.sleep(0.3)

    pubsub.unsubscribe = sent_then_preempted  # type: ignore[method-assign]
    stopping = threading.Thread(target=worker.unsubscribe, daemon=True)
    stopping.start()
    stopping.join(timeout=10)  # the hang it guards against lasts 60 s
    assert not stopping.is_alive(), "unsubscribe hung on the listener thread"
    assert worker.pubsub_thread is not None and not worker.pubsub_thread.is_alive()
