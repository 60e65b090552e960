"""Worker clocks an hour off change nothing: lease time is Redis time, and the holder's own
deadline is measured on the monotonic clock. The worker's wall clock is shifted by
``skewed_clock/sitecustomize.py`` (which says why not libfaketime)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import ContainerRecord, ContainerState
from tests.conftest import ROOT, trusted_gateway
from tests.support import failure_of, rq_worker_command, stream_entries

pytestmark = pytest.mark.redis
TTL_S = 1.5
SKEWED_CLOCK = Path(__file__).parent / "skewed_clock"


@pytest.mark.parametrize("skew", ["+1h", "-1h"])
def test_a_worker_clock_an_hour_off_changes_nothing(
    real_redis: redis.Redis, redis_server: str, fake_endpoint: str, tmp_path: Path, skew: str
) -> None:
    pool = f"skew{skew[0] == '+'}"
    store = LeaseStore(real_redis, pool, lease_ttl_s=TTL_S)
    store.register(ContainerRecord("container-001", "c" * 64, 1, "host-a", f"{fake_endpoint}/mcp", ContainerState.STARTING))
    config = tmp_path / "pool.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_server}"\n[pool]\nname = "{pool}"\n{trusted_gateway(fake_endpoint)}[rules]\nlease_ttl_s = {TTL_S}\ncanary_share = 0.0\n'
    )
    skew_s = 3600 if skew == "+1h" else -3600
    env = {
        **os.environ,
        "CINNAMON_CONFIG": str(config),
        "CINNAMON_TEST_CLOCK_SKEW_S": str(skew_s),
        "PYTHONPATH": os.pathsep.join([str(SKEWED_CLOCK), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    probe = "import datetime, time; print(time.time(), datetime.datetime.now(datetime.timezone.utc).timestamp())"
    seen = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout.split()
    now = int(real_redis.time()[0])
    assert all(abs(float(value) - now - skew_s) < 60 for value in seen), f"the worker's clock is not {skew} off: {seen} vs {now}"
    queue = Queue(pool, connection=real_redis, serializer=JSONSerializer)
    # Each job holds its lease for twice the TTL: only renewals on schedule keep it.
    jobs = [queue.enqueue("tests.jobs.call_endpoint_repeatedly", 2 * TTL_S, str(tmp_path / f"pid{i}"), job_timeout=60) for i in range(3)]
    worker = subprocess.run(rq_worker_command(redis_server, pool, root=ROOT), env=env, capture_output=True, timeout=120, check=False)
    assert worker.returncode == 0, worker.stderr[-2000:]
    for job in jobs:
        fetched = Job.fetch(job.id, connection=real_redis, serializer=JSONSerializer)
        assert fetched.get_status() == JobStatus.FINISHED, failure_of(fetched)
        assert fetched.started_at is not None and abs(fetched.started_at.timestamp() - now - skew_s) < 120, "rq ran it on the skewed clock"
    events = stream_entries(real_redis, store.keys.events)
    released = [f for f in events if f[b"kind"] == b"released"]
    assert [f[b"outcome"] for f in released] == [b"ok"] * 3
    # Measured by Redis: at least the job's 2 TTLs, and nowhere near the hour a worker clock
    # deciding would add or remove (the upper bound leaves a slow CI machine a minute).
    assert all(2 * TTL_S * 1000 <= int(f[b"duration_ms"]) < 2 * TTL_S * 1000 + 60_000 for f in released), released
    assert not [f for f in events if f[b"kind"] == b"revoked"], "no lease expired under the skewed clock"
