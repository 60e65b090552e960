"""The lease protocol with real processes: forking `rq worker`s paused or killed mid-job.

The endpoint is the fake-mcp stand-in run as a local process: it records which fencing token
made every call, so "no call after the new holder's grant" is checked from its own log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from cinnamon_pool.errors import PoolExhausted
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import ContainerRecord, ContainerState, Holder
from cinnamon_pool.tokens import fingerprint
from tests.conftest import ROOT, trusted_gateway
from tests.support import failure_of, rq_worker_command, stream_entries

pytestmark = pytest.mark.redis
TTL_S = 1.5


@pytest.fixture
def one_container_pool(
    real_redis: redis.Redis, redis_server: str, fake_endpoint: str, tmp_path: Path
) -> tuple[LeaseStore, ContainerRecord, dict[str, str]]:
    record = ContainerRecord("container-001", "a" * 64, 1, "host-a", f"{fake_endpoint}/mcp", ContainerState.STARTING)
    store = LeaseStore(real_redis, "proc", lease_ttl_s=TTL_S)
    store.register(record)
    config = tmp_path / "pool.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_server}"\n[pool]\nname = "proc"\n{trusted_gateway(fake_endpoint)}[rules]\nlease_ttl_s = {TTL_S}\n'
    )
    return store, record, {**os.environ, "CINNAMON_CONFIG": str(config)}


def start_worker(env: dict[str, str], url: str) -> subprocess.Popen[bytes]:
    """The project's forking worker: plain rq 3.0 can take 60 s to exit after its last job (its
    unsubscribe race, tests/support.py ``burst``), and these tests time the worker's exit."""
    command = rq_worker_command(url, "proc", root=ROOT)
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def wait_for_file(path: Path, seconds: float = 30) -> int:
    deadline = time.monotonic() + seconds
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"the job did not start within {seconds} s"
        time.sleep(0.02)
    return int(path.read_text())


def job_in_horse(
    env: dict[str, str], client: redis.Redis, url: str, tmp_path: Path, function: str, seconds: float
) -> tuple[Job, subprocess.Popen[bytes], int]:
    """Enqueue ``function(seconds, pid_file)``, start a forking worker; the job, the worker and
    the pid of the work horse running it."""
    job = Queue("proc", connection=client, serializer=JSONSerializer).enqueue(function, seconds, str(tmp_path / "pid"), job_timeout=60)
    worker = start_worker(env, url)
    return job, worker, wait_for_file(tmp_path / "pid")


def server_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_a_paused_holder_makes_no_call_after_the_new_holders_grant(
    one_container_pool: tuple[LeaseStore, ContainerRecord, dict[str, str]],
    real_redis: redis.Redis,
    redis_server: str,
    fake_endpoint: str,
    tmp_path: Path,
) -> None:
    store, record, env = one_container_pool
    job, worker, horse = job_in_horse(env, real_redis, redis_server, tmp_path, "tests.jobs.call_endpoint_repeatedly", 8.0)
    try:
        time.sleep(0.5)
        groups = {worker.pid, os.getpgid(horse)}  # rq puts its work horse in a session of its own
        for group in groups:
            os.killpg(group, signal.SIGSTOP)  # the worker and its work horse: no heartbeat, no calls
        time.sleep(TTL_S + 0.5)
        assert store.reap() == ["container-001"], "the paused holder's lease must expire within its TTL"
        store.register(record)  # the supervisor's recycle
        second = store.acquire(Holder("second-holder"), timeout_s=1)
        granted_at_ms = server_ms(real_redis)
    finally:
        for group in groups:
            os.killpg(group, signal.SIGCONT)
    worker.wait(timeout=60)
    job = Job.fetch(job.id, connection=real_redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FAILED
    assert "LeaseLost" in failure_of(job), failure_of(job)
    calls = httpx.get(f"{fake_endpoint}/_fake/state", timeout=5).json()["calls"]
    first_token_calls = [c for c in calls if c["token"] and c["token"] != fingerprint(second.token)]
    assert first_token_calls, "the first holder should have called before it was paused"
    late = [c for c in first_token_calls if c["at"] * 1000 > granted_at_ms]
    assert late == [], f"the paused holder called {len(late)} time(s) after the new holder's grant"


def test_a_killed_work_horse_leaves_a_lease_that_expires_and_is_not_granted_before_recycling(
    one_container_pool: tuple[LeaseStore, ContainerRecord, dict[str, str]], real_redis: redis.Redis, redis_server: str, tmp_path: Path
) -> None:
    store, record, env = one_container_pool
    _job, worker, horse = job_in_horse(env, real_redis, redis_server, tmp_path, "tests.jobs.hold_and_sleep", 30.0)
    try:
        assert horse != worker.pid, "the forking worker runs the job in a work horse"
        lease = store.snapshot().leases["container-001"]
        os.kill(horse, signal.SIGKILL)
        killed_at = time.monotonic()
        expired: list[str] = []
        while not expired:
            assert time.monotonic() - killed_at < TTL_S + 1.0, "the lease did not expire within its TTL"
            expired = store.reap()
            time.sleep(0.05)
        assert lease.expires_ms - lease.granted_ms <= TTL_S * 1000
        assert store.snapshot().containers["container-001"].state is ContainerState.RESTARTING
        with pytest.raises(PoolExhausted):
            store.acquire(Holder("next"), timeout_s=0, wait=False)  # not before it was recycled
        store.register(record)
        assert store.acquire(Holder("next"), timeout_s=0, wait=False).name == "container-001"
    finally:
        worker.kill()
        worker.wait(timeout=30)


def test_a_killed_rq_parent_leaves_its_work_horse_to_finish_and_release(
    one_container_pool: tuple[LeaseStore, ContainerRecord, dict[str, str]], real_redis: redis.Redis, redis_server: str, tmp_path: Path
) -> None:
    store, _record, env = one_container_pool
    job, worker, horse = job_in_horse(env, real_redis, redis_server, tmp_path, "tests.jobs.call_endpoint_repeatedly", 2.0)
    worker.kill()  # the rq parent dies; its work horse keeps running the job
    worker.wait(timeout=10)
    deadline = time.monotonic() + 30
    while _alive(horse):
        assert time.monotonic() < deadline, "the work horse did not finish its job"
        time.sleep(0.05)
    snapshot = store.snapshot()
    assert snapshot.leases == {} and snapshot.free == ["container-001"], "the horse released the lease itself"
    released = stream_entries(real_redis, store.keys.events, b"released")
    assert [f[b"outcome"] for f in released] == [b"ok"]
    assert Job.fetch(job.id, connection=real_redis, serializer=JSONSerializer).get_status() == JobStatus.FINISHED


def test_sigterm_twice_kills_the_work_horse_and_its_lease_expires_into_a_recycle(
    one_container_pool: tuple[LeaseStore, ContainerRecord, dict[str, str]], real_redis: redis.Redis, redis_server: str, tmp_path: Path
) -> None:
    store, _record, env = one_container_pool
    _job, worker, horse = job_in_horse(env, real_redis, redis_server, tmp_path, "tests.jobs.hold_and_sleep", 30.0)
    worker.send_signal(signal.SIGTERM)  # warm shutdown: would wait for the job
    time.sleep(1.5)  # rq ignores a second signal within 1 s (a worker pool sends duplicates)
    worker.send_signal(signal.SIGTERM)  # cold shutdown: rq kills the work horse
    worker.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _alive(horse):
        assert time.monotonic() < deadline, "rq did not stop the work horse on the second SIGTERM"
        time.sleep(0.05)
    assert "container-001" in store.snapshot().leases, "the killed horse could not release"
    expired: list[str] = []
    while not expired:
        assert time.monotonic() - deadline < TTL_S + 10, "the lease did not expire"
        expired = store.reap()
        time.sleep(0.05)
    assert store.snapshot().containers["container-001"].state is ContainerState.RESTARTING, "recycled before it serves again"


def test_a_job_past_the_hard_cap_loses_its_lease_and_fails(
    one_container_pool: tuple[LeaseStore, ContainerRecord, dict[str, str]],
    real_redis: redis.Redis,
    redis_server: str,
    fake_endpoint: str,
    tmp_path: Path,
) -> None:
    store, _record, env = one_container_pool
    config = Path(env["CINNAMON_CONFIG"])
    config.write_text(config.read_text() + "max_lease_s = 3\n")  # the [rules] table is last
    job, worker, _horse = job_in_horse(env, real_redis, redis_server, tmp_path, "tests.jobs.call_endpoint_repeatedly", 8.0)
    assert worker.wait(timeout=60) == 0
    job = Job.fetch(job.id, connection=real_redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FAILED
    assert "LeaseLost" in failure_of(job), failure_of(job)
    store.reap()
    ended = stream_entries(real_redis, store.keys.events, b"revoked", b"released")
    assert len(ended) == 1 and ended[0][b"kind"] == b"revoked", ended
    assert int(ended[0][b"duration_ms"]) >= 3000 and ended[0][b"reason"] in {b"hard cap", b"expired"}, ended
    calls = httpx.get(f"{fake_endpoint}/_fake/state", timeout=5).json()["calls"]
    first, last = calls[0]["at"], calls[-1]["at"]
    assert last - first < 3.0 + TTL_S, f"calls went on for {last - first:.1f} s, past the 3 s cap"
    assert store.snapshot().containers["container-001"].state is ContainerState.RESTARTING


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
