"""A real Redis Cluster for the tests: 3 primaries and 3 replicas, each a private
``redis-server --cluster-enabled yes`` on loopback, joined by ``redis-cli --cluster create``
(what an operator runs), with a node timeout of 1 s so a killed primary's replica takes over
within seconds."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import redis

from tests.support import free_port, stop, wait_until

NODE_TIMEOUT_MS = 1000
NODES = 6  # 3 primaries, each with 1 replica


class RedisClusterSet:
    def __init__(self, workdir: Path, preexec_fn: Callable[[], None] | None = None) -> None:
        self.workdir, self.preexec_fn = workdir, preexec_fn
        workdir.mkdir(parents=True, exist_ok=True)
        self.servers: dict[int, subprocess.Popen[bytes]] = {}
        self.bus: dict[int, int] = {}  # each node's cluster bus port
        try:
            self._create()
        except BaseException:
            self.stop()
            raise

    def _create(self) -> None:
        for _ in range(NODES):
            self._start(free_port())
        addresses = [f"127.0.0.1:{port}" for port in self.servers]
        created = subprocess.run(
            [_binary("redis-cli"), "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}{created.stderr[-2000:]}")
        wait_until(lambda: all(self._state(port) == "ok" for port in self.servers), 30, "the cluster did not come up")

    def _start(self, port: int) -> None:
        self.bus.setdefault(port, free_port())
        command = [_binary("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.workdir), "--dbfilename", f"dump-{port}.rdb", "--cluster-enabled", "yes"]
        command += ["--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", str(NODE_TIMEOUT_MS)]
        command += ["--cluster-port", str(self.bus[port]), "--repl-diskless-sync-delay", "0"]  # not port + 10000: may be taken
        self.servers[port] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, preexec_fn=self.preexec_fn)
        wait_until(lambda: self._state(port) is not None, 5, f"redis-server on {port} did not answer")

    @staticmethod
    def _state(port: int) -> str | None:
        try:
            info = redis.Redis(port=port, socket_timeout=1).execute_command("CLUSTER", "INFO")
        except redis.RedisError:
            return None
        text = info.decode() if isinstance(info, bytes) else str(info)
        fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
        return fields.get("cluster_state")

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming one node (the client learns the rest from it)."""
        return f"redis+cluster://127.0.0.1:{next(iter(self.servers))}/0"

    def primary_of(self, key: str) -> int:
        """The port of the primary that serves ``key``'s slot now."""
        for port, process in self.servers.items():
            if process.poll() is not None:
                continue
            try:
                client = redis.Redis(port=port, socket_timeout=1)
                slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                for start, end, primary, *_replicas in client.execute_command("CLUSTER", "SLOTS"):
                    if int(start) <= slot <= int(end):
                        return int(primary[1])
            except redis.RedisError:
                continue
        raise RuntimeError(f"no node knows who serves {key!r}")

    def kill_primary_of(self, key: str) -> tuple[int, int]:
        """SIGKILL the primary serving ``key``; returns once its replica serves the slot and the
        cluster is whole again: (old, new) port."""
        old = self.primary_of(key)
        self.servers[old].kill()
        self.servers[old].wait()

        def promoted() -> bool:
            try:
                return self.primary_of(key) != old and all(
                    self._state(port) == "ok" for port, process in self.servers.items() if process.poll() is None
                )
            except RuntimeError:
                return False

        wait_until(promoted, 30, "no replica took over the killed primary's slots within 30 s")
        return old, self.primary_of(key)

    def restart(self, port: int) -> None:
        """Start a killed node again (as an operator would): it reads its nodes file, rejoins,
        and the cluster makes it a replica of the primary that took its slots; returns once that
        primary has a replica in sync again."""
        self._start(port)
        wait_until(
            lambda: all(_replicas_in_sync(primary) >= 1 for primary in self.primaries()), 30, "the restarted node did not become a replica"
        )

    def primaries(self) -> set[int]:
        return {self.primary_of(key) for key in ("a", "b", "c")}  # slots 15495, 3300, 7365: one on each primary

    def stop(self) -> None:
        for process in self.servers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                stop(process)


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: run `make services` (installs Debian's redis-server)")
    return found


def _replicas_in_sync(port: int) -> int:
    try:
        info = redis.Redis(port=port, socket_timeout=1).info("replication")
    except redis.RedisError:
        return 0
    return sum(1 for key, value in info.items() if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online")
