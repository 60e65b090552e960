"""Two Docker hosts serving one pool, each a real `supervise` and a real `gateway` with its own
`pool.host`, port range and gateway port (both on this machine's one Docker engine), jobs from
forking rq workers over both; then one host's processes are killed and jobs keep flowing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.pool import ContainerPool
from tests.conftest import ROOT
from tests.integration.gateway_stand import MCP_HEADERS, initialize
from tests.integration.supervised import eventually
from tests.lease_helpers import assert_one_lease_at_a_time
from tests.support import failure_of, free_port, returned, rq_worker_command

pytestmark = [pytest.mark.docker, pytest.mark.redis]
BIN = Path(sys.executable).parent
NAVIGATE = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "browser_navigate", "arguments": {"url": "data:,x"}}}


@dataclass
class Host:
    name: str
    config_path: Path
    processes: list[subprocess.Popen[bytes]]

    def start(self, workdir: Path) -> None:
        env = {**os.environ, "CINNAMON_CONFIG": str(self.config_path)}
        for command in ("supervise", "gateway"):
            log = (workdir / f"{self.name}-{command}.log").open("wb")
            self.processes.append(subprocess.Popen([str(BIN / "cinnamon-pool"), command], env=env, stdout=log, stderr=subprocess.STDOUT))

    def kill(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def two_hosts(
    real_redis: redis.Redis, redis_server: str, pool_cleanup: str, test_network: str, fake_image: str, tmp_path: Path
) -> Iterator[tuple[Host, Host]]:
    hosts = []
    listens = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    trusted = ", ".join(f'"http://{listen}"' for listen in listens)  # each host's gateway: workers send tokens to both
    for (name, ports), listen in zip((("host-a", "3960-3964"), ("host-b", "3970-3974")), listens, strict=True):
        path = tmp_path / f"{name}.toml"
        path.write_text(
            f'[redis]\nurl = "{redis_server}"\n'
            f'[pool]\nname = "{pool_cleanup}"\nhost = "{name}"\nmin_size = 1\nmax_size = 3\ninitial_size = 2\n'
            f'[container]\nimage = "{fake_image}"\nvolumes = ["/usr:/usr:ro"]\nnetwork = "{test_network}"\nhost_port_range = "{ports}"\n'
            "[rules]\ntick_s = 0.3\nleader_lease_s = 1.5\nleader_renew_deadline_s = 1.0\nleader_retry_s = 0.2\nlease_ttl_s = 3\n"
            "health_interval_s = 1\nhealth_timeout_s = 2\nscale_cooldown_s = 60\nidle_shrink_s = 600\ncanary_share = 0\n"
            f'[logs]\ndir = "{tmp_path / name}"\n[metrics]\nport = 0\n[gateway]\nlisten = "{listen}"\ntrusted_urls = [{trusted}]\n'
        )
        hosts.append(Host(name, path, []))
    yield hosts[0], hosts[1]
    for host in hosts:
        for process in host.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def finished(jobs: list[Job], client: redis.Redis) -> list[Job]:
    fetched = [Job.fetch(job.id, connection=client, serializer=JSONSerializer) for job in jobs]
    failed = [job for job in fetched if job.get_status() == JobStatus.FAILED]
    assert not failed, failure_of(failed[0]) or "failed"
    return [job for job in fetched if job.get_status() == JobStatus.FINISHED]


def test_jobs_spread_over_two_hosts_keep_flowing_when_one_dies_and_it_comes_back(
    two_hosts: tuple[Host, Host], real_redis: redis.Redis, redis_server: str, pool_cleanup: str, tmp_path: Path
) -> None:
    host_a, host_b = two_hosts
    pool = ContainerPool(PoolConfig.load(host_a.config_path))
    host_a.start(tmp_path)
    eventually(lambda: pool.status()["available"] == 2, seconds=30, what="host-a's 2 containers")
    host_b.start(tmp_path)
    eventually(lambda: pool.status()["available"] == 4, seconds=30, what="host-b's 2 containers as well")
    names = {c["name"]: c["endpoint"] for c in pool.status()["containers"]}
    assert set(names) == {"container-001", "container-002", "container-1001", "container-1002"}, names
    assert len({endpoint.rsplit("/", 3)[0] for endpoint in names.values()}) == 2, "each host's containers behind its own gateway"

    queue = Queue("two-hosts", connection=real_redis, serializer=JSONSerializer)
    env = {**os.environ, "CINNAMON_CONFIG": str(host_a.config_path)}
    logs = [tmp_path / f"worker-{n}.log" for n in range(3)]  # a worker that will not stop shows why
    workers = [
        subprocess.Popen(rq_worker_command(redis_server, "two-hosts", burst=False, root=ROOT), env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        for log in logs
    ]  # fmt: skip
    try:
        before = [queue.enqueue("tests.faults.jobs.browse", 2, 0.2, retry=Retry(max=3), job_timeout=60) for _ in range(18)]
        eventually(lambda: len(finished(before, real_redis)) == len(before), seconds=90, what="the first jobs done")
        used = {returned(job)["container"] for job in finished(before, real_redis)}
        assert used & {"container-001", "container-002"} and used & {"container-1001", "container-1002"}, f"jobs ran on both hosts: {used}"

        host_b.kill()  # its supervisor and its gateway: the host is gone
        after = [queue.enqueue("tests.faults.jobs.browse", 2, 0.05, retry=Retry(max=3), job_timeout=60) for _ in range(12)]
        eventually(lambda: len(finished(after, real_redis)) == len(after), seconds=90, what="jobs after host-b died")
        host_b_names = {"container-1001", "container-1002"}
        assert not {returned(job)["container"] for job in finished(after, real_redis)} & host_b_names, "later jobs ran on host-a"
        available = {c["name"] for c in pool.status()["containers"] if c["state"] == "available"}
        assert not available & host_b_names, f"host-b's containers left the free set: {available}"

        host_b.processes.clear()
        host_b.start(tmp_path)  # the host comes back: it recycles and serves its own containers again
        eventually(
            lambda: host_b_names <= {c["name"] for c in pool.status()["containers"] if c["state"] == "available"},
            seconds=30,
            what="host-b's containers back in service",
        )
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker, log in zip(workers, logs, strict=True):
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                pytest.fail(f"an rq worker did not stop within 30 s of SIGTERM; its log ends:\n{log.read_text()[-3000:]}")

    assert_one_lease_at_a_time(real_redis, PoolKeys(pool_cleanup))  # no container served two leases at once


def test_a_client_on_one_gateway_gets_containers_of_both_hosts_each_through_its_own_hosts_gateway(
    two_hosts: tuple[Host, Host], real_redis: redis.Redis, pool_cleanup: str, tmp_path: Path
) -> None:
    host_a, host_b = two_hosts
    config = PoolConfig.load(host_a.config_path)
    pool = ContainerPool(config)
    host_a.start(tmp_path)
    host_b.start(tmp_path)
    eventually(lambda: pool.status()["available"] == 4, seconds=60, what="2 containers on each host")
    env = {**os.environ, "CINNAMON_CONFIG": str(host_a.config_path)}
    made = subprocess.run([str(BIN / "cinnamon-pool"), "keys", "create", "agents"], env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    url = f"{config.gateway.base_url}/{pool_cleanup}/mcp"  # host-a's gateway only
    client = httpx.Client(headers={**MCP_HEADERS, "Authorization": f"Bearer {made.stdout.strip()}"}, timeout=30)
    sessions = {}
    for i in range(4):
        opened = client.post(url, json=initialize(i))
        assert opened.status_code == 200, opened.text
        sessions[opened.headers["X-Cinnamon-Container"]] = opened.headers["mcp-session-id"]
    assert set(sessions) == {"container-001", "container-002", "container-1001", "container-1002"}, "four sessions, four containers"
    leases = pool.store.snapshot().leases
    for name, session in sessions.items():
        called = client.post(url, json=NAVIGATE, headers={"mcp-session-id": session})
        assert called.status_code == 200 and called.headers["X-Cinnamon-Container"] == name, called.text
        assert leases[name].worker == "key:agents"
    for session in sessions.values():
        assert client.delete(url, headers={"mcp-session-id": session}).status_code < 300
    eventually(lambda: not pool.store.snapshot().leases, seconds=10, what="every session's lease released")
    assert_one_lease_at_a_time(real_redis, PoolKeys(pool_cleanup))
