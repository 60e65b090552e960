"""Process helpers shared by the test fixtures and the benchmarks."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import docker
import httpx
import redis

from cinnamon_pool.runtime import egress


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def die_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGKILL when the process that started it dies (Linux),
    so a test tool killed outright leaves no server or worker running behind it."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def start_redis_server(
    workdir: Path, port: int | None = None, preexec_fn: Callable[[], None] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server on loopback (no persistence); the process and its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make services` (installs Debian's redis-server)")
    port = port or free_port()
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        preexec_fn=preexec_fn,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 5
    while True:
        try:
            client.ping()
            return process, url
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("redis-server did not answer within 5 s") from None
            time.sleep(0.05)
        finally:
            client.close()


class RedisHA:
    """A primary, one replica and one Sentinel (quorum 1), all private redis-server processes on
    loopback: the smallest set in which Sentinel promotes the replica when the primary dies.

    The Sentinel is ``redis-server --sentinel``: the very program Debian's redis-sentinel package
    starts (its binary is the same redis-server), without installing a system service."""

    SERVICE = "cinnamon"

    def __init__(self, workdir: Path, preexec_fn: Callable[[], None] | None = None) -> None:
        self.workdir, self.preexec_fn = workdir, preexec_fn
        workdir.mkdir(parents=True, exist_ok=True)
        self.servers: dict[int, subprocess.Popen[bytes]] = {}
        primary, replica = free_port(), free_port()
        self.sentinel_port = free_port()
        self._start_server(primary)
        self._start_server(replica, f"127.0.0.1 {primary}")
        config = workdir / "sentinel.conf"  # Sentinel rewrites it: a file of its own
        config.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {workdir}\nlogfile {workdir / 'sentinel.log'}\n"
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {primary} 1\n"
            # 3 s, not 1: with 1 s a freshly promoted primary on a loaded 2-core machine was failed back
            f"sentinel down-after-milliseconds {self.SERVICE} 3000\nsentinel failover-timeout {self.SERVICE} 5000\n"
        )
        self.sentinel = subprocess.Popen(
            [_redis_server(), str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, preexec_fn=preexec_fn
        )
        self.client = redis.Redis(port=self.sentinel_port, socket_timeout=2)
        wait_until(lambda: self.replicas_in_sync(primary) >= 1, 15, "the replica did not sync with the primary")
        wait_until(lambda: self.primary_port() == primary, 10, "Sentinel did not report the primary")

    def _start_server(self, port: int, replica_of: str = "") -> None:
        command = [
            _redis_server(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]
        command += ["--dbfilename", f"dump-{port}.rdb", "--repl-diskless-sync-delay", "0"]  # a replica syncs at once
        if replica_of:
            command += ["--replicaof", *replica_of.split()]
        self.servers[port] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, preexec_fn=self.preexec_fn)
        wait_until(lambda: _answers(port), 5, f"redis-server on {port} did not answer")

    @property
    def sentinels(self) -> list[str]:
        return [f"127.0.0.1:{self.sentinel_port}"]

    def primary_port(self) -> int | None:
        try:
            address = cast(tuple[str, int] | None, self.client.sentinel_get_master_addr_by_name(self.SERVICE))
        except redis.RedisError:
            return None
        return int(address[1]) if address else None

    def primary_healthy(self) -> bool:
        """Sentinel sees the primary it names as up and a primary (what its clients ask)."""
        try:
            state = cast(dict[str, Any], self.client.sentinel_master(self.SERVICE))
        except redis.RedisError:
            return False
        return bool(state.get("is_master")) and not state.get("is_sdown") and not state.get("is_odown")

    def replicas_in_sync(self, port: int) -> int:
        """Replicas of the server on ``port`` past their first full sync (state online)."""
        try:
            info = redis.Redis(port=port, socket_timeout=1).info("replication")
        except redis.RedisError:
            return 0
        return sum(
            1 for key, value in info.items() if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
        )

    def kill_primary(self) -> tuple[int, int]:
        """SIGKILL the primary; returns once Sentinel names the promoted replica: (old, new) port."""
        old = self.primary_port()
        assert old is not None
        self.servers[old].kill()
        self.servers[old].wait()
        wait_until(
            lambda: self.primary_port() not in {None, old} and self.primary_healthy(),
            30,
            "Sentinel did not promote the replica within 30 s",
        )
        new = self.primary_port()
        assert new is not None
        return old, new

    def restart(self, port: int) -> None:
        """Start a killed server again, empty, as a replica of the primary Sentinel names now (as
        an operator would; left to itself, Sentinel converts a returning old primary only after
        its next look at it, some 10 s, and meanwhile no replica acknowledges grants)."""
        primary = self.primary_port()
        self._start_server(port, f"127.0.0.1 {primary}" if primary is not None else "")

    def stop(self) -> None:
        for process in [self.sentinel, *self.servers.values()]:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                stop(process)


def _redis_server() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make services` (installs Debian's redis-server)")
    return binary


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(what)
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def rq_worker_command(url: str, queue: str, *, burst: bool = True, root: Path | None = None) -> list[str]:
    """A forking `rq worker` with the JSON serializer and the job side preloaded."""
    command = [str(Path(sys.executable).parent / "rq"), "worker", "-S", "json", "-w", "cinnamon_pool.worker.Worker", "--url", url]
    if root is not None:
        command += ["--path", str(root)]
    return [*command, *(["--burst"] if burst else []), queue]


ENDED = {"finished", "failed", "stopped", "canceled"}
EXIT_GRACE_S = 5.0


def burst(command: list[str], env: dict[str, str], client: redis.Redis, job_ids: list[str], timeout_s: float = 120.0) -> str:
    """Run a plain `rq worker --burst` (``command``) until it exits, or until every job of
    ``job_ids`` has ended and it had ``EXIT_GRACE_S`` to exit; its output.

    rq 3.0 with redis-py 8 can take 60 s to exit after its last job: its ``unsubscribe`` lets the
    pub/sub thread go back to a 60 s read before it stops and joins it (``cinnamon_pool.worker.Worker``
    unsubscribes in the order that cannot hang). A plain worker still there after the grace is in
    that read, with its work done: it is killed, and the tests judge the jobs' own results."""
    from rq.job import Job
    from rq.serializers import JSONSerializer

    def ended() -> bool:
        return all(Job.fetch(job_id, connection=client, serializer=JSONSerializer).get_status() in ENDED for job_id in job_ids)

    with tempfile.TemporaryFile("w+") as output:
        worker = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        deadline, done_at = time.monotonic() + timeout_s, None
        try:
            while worker.poll() is None:
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(command, timeout_s)
                if done_at is None and job_ids and ended():
                    done_at = time.monotonic()
                if done_at is not None and time.monotonic() - done_at > EXIT_GRACE_S:
                    break
                time.sleep(0.1)
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)
        output.seek(0)
        return output.read()


def wait_for_http(url: str, seconds: float = 15, what: str = "") -> None:
    """Until ``url`` gives any HTTP answer; RuntimeError naming ``what`` (or the URL) after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what or url} did not answer within {seconds} s") from None
            time.sleep(0.05)


def sweep_egress(engine: docker.DockerClient) -> int:
    """Remove the firewall rules (container.egress) of every network that is gone; a test that
    removed its network calls this, so it leaves no rule behind, pass or fail."""
    return egress.sweep(network.name for network in engine.networks.list())


def stream_entries(client: redis.Redis, key: str, *kinds: bytes, start: str = "-") -> list[dict[bytes, bytes]]:
    """The fields of every entry of the stream ``key`` (the pool's events) from ``start`` on,
    oldest first; only those whose ``kind`` is one of ``kinds`` when any are given."""
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(key, min=start))
    return [fields for _id, fields in entries if not kinds or fields.get(b"kind") in kinds]


def returned(job: Any) -> Any:
    """An rq job's return value (``Job.return_value()`` is typed optional: a job that returned
    nothing is read as None all the same)."""
    return job.return_value()


def failure_of(job: Any) -> str:
    """An rq job's exception text, "" when it has none (``Job.latest_result()`` may be None)."""
    result = job.latest_result()
    return (result.exc_string or "") if result is not None else ""
