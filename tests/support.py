"""Process helpers shared by the test fixtures and the benchmarks."""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis


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
