"""The Redis ACL of docs/operations.md, applied as written to a real redis-server: a supervisor,
a gateway process, a forking `rq worker` and a session on connect do their work as those users
and meet no refusal, and each user is refused what its role does not need."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.health import ProbeResult
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.logs.writer import DailyLogWriter
from cinnamon_pool.supervisor.loop import Supervisor
from tests.conftest import FAKE_MCP
from tests.fakes import FakeRuntime
from tests.support import burst, free_port, stop, wait_for_http

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOST = "acl-host"
PASSWORDS = {"SUPERVISOR_PASSWORD": "sup-3f1", "GATEWAY_PASSWORD": "gw-77a", "WORKER_PASSWORD": "wk-c02"}
MCP = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "acl", "version": "1"}},
}  # fmt: skip


def documented_acl() -> list[str]:
    """The ACL SETUSER lines between the acl markers of docs/operations.md, passwords filled in."""
    text = (ROOT / "docs" / "operations.md").read_text()
    block = text.split("<!-- acl:begin -->", 1)[1].split("<!-- acl:end -->", 1)[0]
    lines = [line.strip() for line in block.splitlines() if line.strip().startswith("ACL SETUSER")]
    assert len(lines) == 3, f"docs/operations.md should give three ACL users, found: {lines}"
    return [re.sub("|".join(PASSWORDS), lambda m: PASSWORDS[m.group(0)], line) for line in lines]


def user_url(server: str, user: str, password: str) -> str:
    return server.replace("redis://", f"redis://{user}:{password}@", 1)


@pytest.fixture
def acl_users(real_redis: redis.Redis, redis_server: str) -> Iterator[dict[str, str]]:
    for line in documented_acl():
        real_redis.execute_command(*line.split())
    real_redis.execute_command("ACL", "LOG", "RESET")
    yield {
        "supervisor": user_url(redis_server, "cinnamon-supervisor", PASSWORDS["SUPERVISOR_PASSWORD"]),
        "gateway": user_url(redis_server, "cinnamon-gateway", PASSWORDS["GATEWAY_PASSWORD"]),
        "worker": user_url(redis_server, "cinnamon-worker", PASSWORDS["WORKER_PASSWORD"]),
        "admin": redis_server,
    }
    for user in ("cinnamon-supervisor", "cinnamon-gateway", "cinnamon-worker"):
        real_redis.execute_command("ACL", "DELUSER", user)


def refused(url: str, *command: str) -> bool:
    client = redis.Redis.from_url(url)
    try:
        client.execute_command(*command)
    except redis.exceptions.NoPermissionError:
        return True
    finally:
        client.close()
    return False


def test_each_role_works_as_its_documented_acl_user_and_is_refused_the_rest(
    acl_users: dict[str, str], real_redis: redis.Redis, tmp_path: Path
) -> None:
    port, gateway_port = free_port(), free_port()
    path = tmp_path / "pool.toml"
    path.write_text(
        f'[pool]\nname = "default"\nmin_size = 1\nmax_size = 1\ninitial_size = 1\nhost = "{HOST}"\n'
        f'[container]\nimage = "cinnamon-pool/fake-mcp:test"\nhost_port_range = "{port}-{port}"\n'
        f'[gateway]\nlisten = "127.0.0.1:{gateway_port}"\n[logs]\ndir = "{tmp_path / "logs"}"\n'
    )
    env = {**os.environ, "CINNAMON_CONFIG": str(path), "CINNAMON_REDIS_URL": acl_users["admin"]}  # the operator's
    config = PoolConfig.load(path)
    fake = subprocess.Popen(
        ["/usr/bin/python3", str(FAKE_MCP), "--host", "127.0.0.1", "--port", str(port), "--allowed-hosts", f"127.0.0.1:{port}"],
        stderr=subprocess.DEVNULL,
    )
    gateway_log = tmp_path / "gateway.log"
    with gateway_log.open("wb") as log:
        gateway = subprocess.Popen(
            [str(BIN / "cinnamon-pool"), "gateway"], env={**env, "CINNAMON_REDIS_URL": acl_users["gateway"]}, stdout=log, stderr=log
        )
    try:
        # The supervisor (its loop, with a stand-in engine) registers the slot as its user.
        supervisor_client = redis.Redis.from_url(acl_users["supervisor"])
        store = LeaseStore(supervisor_client, "default", host=HOST)
        supervisor = Supervisor(
            config, store, FakeRuntime(HOST), DailyLogWriter(tmp_path / "logs"), probe=lambda url, timeout: ProbeResult(True, 0.01)
        )
        wait_for_http(f"http://127.0.0.1:{gateway_port}/metrics")
        wait_for_http(f"http://127.0.0.1:{port}/_fake/state")
        for _ in range(3):
            supervisor.tick()
        assert store.snapshot().free, f"the supervisor registered no free container; ACL log: {acl_log(real_redis)}"

        # A job in a forking rq worker, as the worker user, through the gateway.
        job = Queue("acl", connection=real_redis, serializer=JSONSerializer).enqueue("tests.jobs.open_page", "", job_timeout=60)
        worker = burst(
            [str(BIN / "rq"), "worker", "--burst", "-S", "json", "--path", str(ROOT), "--url", acl_users["worker"], "acl"],
            {**env, "CINNAMON_REDIS_URL": acl_users["worker"]},
            real_redis,
            [job.id],
        )
        job = Job.fetch(job.id, connection=real_redis, serializer=JSONSerializer)
        assert job.get_status() == JobStatus.FINISHED, f"{job.get_status()}: {job.latest_result()}\n{worker[-3000:]}"
        for _ in range(2):
            supervisor.tick()  # reads the job's events back (consumer group) and logs them

        # A session on connect, as the gateway user (key made by the operator, as admin).
        made = subprocess.run([str(BIN / "cinnamon-pool"), "keys", "create", "acl"], env=env, capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        connect = f"http://127.0.0.1:{gateway_port}/default/mcp"
        opened = httpx.post(connect, content=json.dumps(INITIALIZE), headers={**MCP, "Authorization": f"Bearer {key}"}, timeout=30)
        assert opened.status_code == 200, f"{opened.text}\n{gateway_log.read_text()[-2000:]}"
        closed = httpx.delete(connect, headers={"Authorization": f"Bearer {key}", "mcp-session-id": opened.headers["mcp-session-id"]})
        assert closed.status_code < 300
        supervisor.tick()

        assert acl_log(real_redis) == [], "a role was refused something it needs"
    finally:
        for process in (gateway, fake):
            stop(process)

    for role in ("supervisor", "gateway"):
        url = acl_users[role]
        assert refused(url, "LPUSH", "rq:queue:acl", "x"), f"the {role} could enqueue an rq job"
        assert refused(url, "GET", "rq:job:x"), f"the {role} could read rq's keys"
    for role in ("supervisor", "gateway", "worker"):
        url = acl_users[role]
        assert refused(url, "HGET", "cinnamon:{other}:containers", "x"), f"the {role} could read another pool"
        for command in (("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("ACL", "LIST"), ("SAVE",)):
            assert refused(url, *command), f"the {role} may {' '.join(command)}"


def acl_log(client: redis.Redis) -> list[str]:
    """What the ACL refused so far: user, command or key."""
    entries = client.execute_command("ACL", "LOG")
    shown = []
    for entry in entries:
        fields = dict(zip(entry[::2], entry[1::2], strict=False)) if isinstance(entry, list) else entry
        shown.append(
            " ".join(
                f"{k}={v}" for k, v in fields.items() if str(k) in {"username", "object", "reason", "context", "b'username'", "b'object'"}
            )
        )
    return shown
