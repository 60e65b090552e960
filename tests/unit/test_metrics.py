"""The Prometheus metrics the supervisor exports, read back in the text format."""

from __future__ import annotations

import fakeredis
from prometheus_client import generate_latest

from cinnamon_pool import decode
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import Holder, Outcome
from cinnamon_pool.supervisor.metrics import PoolMetrics, reason_label
from tests.lease_helpers import record


def test_pool_gauges_and_lease_counters() -> None:
    store = LeaseStore(fakeredis.FakeRedis(), "unit")
    for slot in (1, 2):
        store.register(record(slot))
    grant = store.acquire(Holder("run"), timeout_s=0, wait=False)
    metrics = PoolMetrics("unit")
    snapshot = store.snapshot()
    metrics.observe_pool(snapshot, {"container-001": 180.0}, {"container-001": 37.5})
    token = grant.token
    events = [
        {"kind": "granted", "name": grant.name, "at_ms": "1", "token": token, "test_run_id": "run", "wait_ms": "1500"},
        {"kind": "released", "name": grant.name, "at_ms": "2", "token": token, "test_run_id": "run", "outcome": Outcome.INFRA_ERROR.value,
         "duration_ms": "5"},
    ]  # fmt: skip
    for index, fields in enumerate(events):
        metrics.lease_event(decode.event(f"{index}-0", fields))
    text = generate_latest(metrics.registry).decode()
    assert 'cinnamon_pool_containers{pool="unit",state="available"} 1.0' in text
    assert 'cinnamon_pool_containers{pool="unit",state="allocated"} 1.0' in text
    assert 'cinnamon_pool_container_memory_bytes{container="container-001",pool="unit"} 1.8874368e+08' in text
    assert 'cinnamon_pool_leases_granted_total{pool="unit"} 1.0' in text
    assert 'cinnamon_pool_lease_wait_seconds_bucket{le="2.0",pool="unit"} 1.0' in text
    assert 'cinnamon_pool_lease_wait_seconds_bucket{le="1.0",pool="unit"} 0.0' in text
    assert 'cinnamon_pool_errors_total{kind="infra_error",pool="unit"} 1.0' in text
    assert 'cinnamon_pool_container_cpu_percent{container="container-001",pool="unit"} 37.5' in text
    assert f'cinnamon_pool_container_jobs_total{{container="{grant.name}",outcome="infra_error",pool="unit"}} 1.0' in text
    granted_s = snapshot.leases[grant.name].granted_ms / 1000
    [allocated] = [line for line in text.splitlines() if line.startswith("cinnamon_pool_container_allocated_timestamp_seconds{")]
    assert allocated.startswith(f'cinnamon_pool_container_allocated_timestamp_seconds{{container="{grant.name}",pool="unit"}} ')
    assert float(allocated.rsplit(" ", 1)[1]) == granted_s


def test_reason_labels_stay_bounded() -> None:
    assert reason_label("memory 412MB > 400MB") == "memory"
    assert reason_label("error_threshold") == "error_threshold"
    assert reason_label("3 failed probes (x)") == "other"
    assert reason_label("") == "unknown"


def test_container_names_from_the_stream_become_labels_only_when_the_pool_has_them() -> None:
    store = LeaseStore(fakeredis.FakeRedis(), "unit")
    store.register(record(1))
    metrics = PoolMetrics("unit")
    metrics.observe_pool(store.snapshot(), {})
    for index, name in enumerate(["container-001", *(f"container-{n:06d}" for n in range(500, 800))]):
        fields = {
            "kind": "released",
            "name": name,
            "at_ms": "2",
            "token": "t" * 32,
            "test_run_id": "run",
            "outcome": "ok",
            "duration_ms": "5",
        }
        metrics.lease_event(decode.event(f"{index}-0", fields))
    jobs = [
        line for line in generate_latest(metrics.registry).decode().splitlines() if line.startswith("cinnamon_pool_container_jobs_total{")
    ]
    assert sorted(jobs) == [
        'cinnamon_pool_container_jobs_total{container="container-001",outcome="ok",pool="unit"} 1.0',
        'cinnamon_pool_container_jobs_total{container="other",outcome="ok",pool="unit"} 300.0',
    ]
