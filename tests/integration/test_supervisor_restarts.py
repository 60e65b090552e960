"""Real `cinnamon-pool supervise` processes, a real redis-server and the real engine: a supervisor
that is restarted, or replaced by its standby, adopts the pool as Redis describes it; forged
records never reach Docker; garbage in any key never stops `supervise` or `status`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.typing import EncodableT, FieldT

from cinnamon_pool.errors import LeaseError
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import Holder
from tests.conftest import test_config
from tests.integration.supervised import eventually
from tests.integration.test_supervisor_processes import Supervisors, supervise_from_toml

pytestmark = [pytest.mark.docker, pytest.mark.redis]
BIN = Path(sys.executable).parent
TTL_S = 3.0


class Host(Supervisors):
    """`supervise` processes of one pool, started from a TOML file as an operator would."""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CINNAMON_CONFIG": str(self.config_path)}
        return subprocess.run([str(BIN / "cinnamon-pool"), *args], env=env, capture_output=True, text=True, timeout=30)

    def errors_log(self) -> str:
        return "".join(p.read_text() for p in sorted((self.workdir / "logs" / "containers").glob("container-errors-*.log")))


@pytest.fixture
def host(
    real_redis: redis.Redis, redis_server: str, pool_cleanup: str, test_network: str, fake_image: str, tmp_path: Path
) -> Iterator[Host]:
    config = test_config(pool_cleanup, redis_server, image=fake_image, network=test_network, size=2)
    rules = (
        "tick_s = 0.3\nleader_lease_s = 1.5\nleader_renew_deadline_s = 1.0\nleader_retry_s = 0.2\n"
        f"scale_cooldown_s = 0\nidle_shrink_s = 2\nlease_ttl_s = {TTL_S}\nhealth_interval_s = 1\n"
    )
    yield from supervise_from_toml(Host, config, redis_server, tmp_path, max_size=4, rules=rules, extra="[metrics]\nport = 0\n")


class Holders:
    """Leases held from this process and renewed every TTL/6; any refused renewal is kept."""

    def __init__(self, store: LeaseStore) -> None:
        self.store, self.leases, self.refused = store, {}, []  # type: ignore[var-annotated]
        self.stop = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._renew, daemon=True).start()

    def acquire(self, run: str) -> None:
        grant = self.store.acquire(Holder(run), timeout_s=60)
        with self._lock:
            self.leases[grant.name] = grant.token

    def _renew(self) -> None:
        while not self.stop.wait(TTL_S / 6):
            with self._lock:
                held = dict(self.leases)
            for name, token in held.items():
                try:
                    self.store.renew(name, token)
                except LeaseError as error:
                    self.refused.append(f"{name}: {error}")

    def release_all(self) -> None:
        with self._lock:
            held, self.leases = self.leases, {}
        for name, token in held.items():
            self.store.release(name, token)


def containers(client: docker.DockerClient, pool: str) -> dict[str, str]:
    """container id -> its StartedAt (a restart changes it, a removal drops the id)."""
    rows = client.api.containers(all=True, filters={"label": f"cinnamon.pool={pool}"})
    return {row["Id"]: client.api.inspect_container(row["Id"])["State"]["StartedAt"] for row in rows}


@pytest.mark.parametrize("takeover", ["restart", "standby"])
def test_a_pool_grown_for_waiting_jobs_survives_its_supervisor(
    host: Host, real_redis: redis.Redis, docker_client: docker.DockerClient, pool_cleanup: str, takeover: str
) -> None:
    leader = host.start()
    eventually(lambda: host.pool.status()["available"] == 2, what="two containers up")
    holders = Holders(LeaseStore(real_redis, pool_cleanup, lease_ttl_s=TTL_S))
    try:
        waiting = [threading.Thread(target=holders.acquire, args=(f"job-{i}",)) for i in range(4)]
        for thread in waiting:
            thread.start()  # two are granted at once, two wait: the pool grows to 4 for them
        for thread in waiting:
            thread.join(timeout=60)
        assert len(holders.leases) == 4, f"4 leases held, got {sorted(holders.leases)}"
        assert host.pool.store.snapshot().desired, "the grown size is stored in Redis"
        before = containers(docker_client, pool_cleanup)
        assert len(before) == 4

        if takeover == "standby":
            host.start()
            eventually(lambda: "standing by" in host.output(1), seconds=15, what="a standby")
        os.kill(leader.pid, signal.SIGKILL)
        leader.wait(timeout=10)
        if takeover == "restart":
            host.start()
        eventually(lambda: "leading" in host.output(1), seconds=15, what="the new supervisor leading")
        time.sleep(3 * TTL_S)  # many ticks of the new leader, and a whole TTL of renewals
        assert holders.refused == [], "every lease kept renewing"
        assert containers(docker_client, pool_cleanup) == before, "no container was removed, created or restarted"
        assert sorted(host.pool.status()["containers"][i]["state"] for i in range(4)) == ["allocated"] * 4

        holders.release_all()
        eventually(
            lambda: host.pool.status()["total"] == 1 and len(containers(docker_client, pool_cleanup)) == 1,
            seconds=30,
            what="the pool shrank to min_size once the containers were released and idle",
        )
    finally:
        holders.stop.set()


def test_a_forged_record_never_makes_the_supervisor_touch_a_foreign_container(
    host: Host, real_redis: redis.Redis, docker_client: docker.DockerClient, pool_cleanup: str, fake_image: str
) -> None:
    foreign = docker_client.containers.run(
        fake_image, ["--port", "8931"], detach=True, labels={"cinnamon.test": "foreign"},
        volumes={"/usr": {"bind": "/usr", "mode": "ro"}},
    )  # fmt: skip
    try:
        host.start()
        eventually(lambda: host.pool.status()["available"] == 2, what="two containers up")
        keys = PoolKeys(pool_cleanup)
        record = json.loads(real_redis.hget(keys.containers, "container-001") or b"{}")
        paths = {  # name -> (forged state, slot): restart/recycle, scale-down (above the size), reap, unhealthy
            "container-002": ("restarting", 2),
            "container-003": ("available", 3),
            "container-004": ("allocated", 4),
            "container-005": ("unhealthy", 1),
        }
        for name, (state, slot) in paths.items():
            forged = {**record, "name": name, "container_id": foreign.id, "slot": slot, "state": state}
            real_redis.hset(keys.containers, name, json.dumps(forged))
            if state == "available":
                real_redis.zadd(keys.free, {name: 0})
            if state == "allocated":  # an expired lease, for the reaper
                lease = {"token": f"{'0' * 16}:1:{'0' * 16}", "test_run_id": "x", "granted_ms": 0, "expires_ms": 1, "cap_ms": 2}
                real_redis.hset(keys.leases, name, json.dumps(lease))
                real_redis.zadd(keys.expiries, {name: 1})
        assert host.cli("restart", "container-002").returncode == 0
        eventually(
            lambda: (
                set(host.pool.status()["containers"][i]["name"] for i in range(len(host.pool.status()["containers"])))
                == {"container-001", "container-002"}
            ),
            seconds=15,
            what="forged records dropped",
        )
        time.sleep(1.0)
        foreign.reload()
        assert foreign.status == "running", "the foreign container was neither removed nor restarted"
        assert docker_client.api.inspect_container(foreign.id)["RestartCount"] == 0
        errors = host.errors_log()
        for name in ("container-003", "container-004"):
            assert f"{name} | ERROR_OCCURRED" in errors and "Docker does not report for this pool" in errors, errors[-2000:]
    finally:
        foreign.remove(force=True)


GARBAGE = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"", b"null", b"[]", b"{}", b'{"name": 5}', b"1e999", b"-1", b"\x00\xff" * 40, b"x" * 70_000]),
    st.text(max_size=32).map(str.encode),
)


def test_garbage_in_every_key_never_stops_supervise_or_status(
    host: Host, real_redis: redis.Redis, docker_client: docker.DockerClient, pool_cleanup: str
) -> None:
    supervise = host.start()
    eventually(lambda: host.pool.status()["available"] == 2, what="two containers up")
    keys = PoolKeys(pool_cleanup)
    hashes = [keys.containers, keys.leases, keys.memory, keys.cpu, keys.tool_calls, keys.desired, keys.tickets, keys.handoffs]
    hashes += [keys.last_tokens, keys.meta]
    zsets = [keys.free, keys.expiries, keys.waiters, keys.waiter_deadlines]
    fields = st.sampled_from([b"container-001", b"container-002", b"container-009", b"epoch", b"generation", b"\n\x1b[2J", b"h" * 300])

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(
        st.lists(
            st.one_of(
                st.tuples(st.just("hash"), st.sampled_from(hashes), fields, GARBAGE),
                st.tuples(st.just("zset"), st.sampled_from(zsets), GARBAGE, st.floats(allow_nan=False).map(str).map(str.encode)),
                st.tuples(
                    st.just("stream"), st.just(keys.events), st.sampled_from([b"granted", b"released", b"scaled"]) | GARBAGE, GARBAGE
                ),
                st.tuples(
                    st.just("type"),
                    st.sampled_from([keys.containers, keys.free, keys.desired, keys.draining, keys.waiters, keys.tool_calls, keys.cpu]),
                    GARBAGE,
                    GARBAGE,
                ),
            ),
            min_size=1,
            max_size=6,
        )
    )
    def write_garbage(writes: list[tuple[str, str, bytes, bytes]]) -> None:
        for kind, key, first, second in writes:
            wanted = {"hash": b"hash", "zset": b"zset", "stream": b"stream"}.get(kind)
            if wanted is not None and real_redis.type(key) not in (wanted, b"none"):
                real_redis.delete(key)  # a wrong type left by an earlier example
            if kind == "hash":
                real_redis.hset(key, first, second)
            elif kind == "zset":
                real_redis.zadd(key, {first or b"m": float(second) if second not in (b"inf", b"-inf") else 0.0})
            elif kind == "stream":
                fields: dict[FieldT, EncodableT] = {
                    b"kind": first[:20] or b"granted",
                    b"name": second[:20],
                    b"at_ms": second[:20],
                    b"wait_ms": second,
                }
                real_redis.xadd(key, {**fields, b"token": b"t", b"test_run_id": b"r", b"outcome": second, b"duration_ms": second})
            else:  # the wrong type under a pool key
                real_redis.delete(key)
                real_redis.set(key, first)
        time.sleep(0.3)  # a tick
        assert supervise.poll() is None, "supervise stopped"
        status = host.cli("status", "--json")
        assert status.returncode == 0, status.stderr
        json.loads(status.stdout)
        for kind, key, _first, _second in writes:
            if kind == "type":
                real_redis.delete(key)  # a wrong type stops every script: the operator's garbage to remove

    write_garbage()
    for key in [keys.meta, keys.tickets, keys.handoffs, keys.waiters, keys.waiter_deadlines, keys.draining, keys.last_tokens]:
        real_redis.delete(key)  # the rest of the garbage gone (meta too: a new epoch, as after a Redis flush)

    def converged() -> bool:  # (an idle pool may shrink to min_size = 1 meanwhile)
        status = host.pool.status()
        return bool(status["total"] >= 1 and status["available"] == status["total"] == len(containers(docker_client, pool_cleanup)))

    deadline = time.monotonic() + 30
    while not converged():
        assert time.monotonic() < deadline, (
            f"the pool did not converge within 30 s once the garbage was gone: {host.pool.status()}\n"
            f"{host.errors_log()[-3000:]}\n{host.output(0)[-2000:]}"
        )
        time.sleep(0.1)
    assert supervise.poll() is None
    assert "tick failed" not in host.output(0), "garbage is reported as bad values, not met as an unexpected error"
    assert "bad value in Redis" in host.errors_log()
    LeaseStore(real_redis, pool_cleanup).acquire(Holder("after-garbage"), timeout_s=5)
