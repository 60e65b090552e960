"""The soak's runner: its parts started and kept, jobs submitted, faults injected in rounds, the
pool watched until whole again after each (tests/soak; its command line: cli.py)."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import redis
from rq import Queue, Retry
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.connect import redis_client
from cinnamon_pool.errors import StoreError
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.apikeys import ApiKeys
from cinnamon_pool.pool import ContainerPool
from tests.faults.history import StreamTail, monotonic_ms, record_fault
from tests.faults.proxy import FaultProxy
from tests.redis_cluster import RedisClusterSet
from tests.soak.injector import Injector
from tests.soak.settings import (
    CLIENT_FAULTS,
    CONNECT_IDLE_S,
    CONVERGE_WAIT_S,
    DOCKERD_PID,
    FAKE_IMAGE,
    FAMILIES,
    FAULTS,
    HA_FAULTS,
    LOGS_TMPFS_SIZE,
    PAUSE_S,
    PORTS,
    RETRIES,
    ROOT,
    SPAWNING,
    TTL_S,
    children,
    say,
)
from tests.soak.verdict import Summary
from tests.support import RedisHA, die_with_parent, free_port, rq_worker_command, start_redis_server, stop, sweep_egress


class Soak(Injector, Summary):
    def __init__(
        self,
        workdir: Path,
        duration_s: float,
        interval_s: float,
        workers: int,
        seed: int,
        redis_ha: bool = False,
        faults: tuple[str, ...] = (),
        connect_clients: int = 0,
        every_fault: bool = False,
        redis_cluster: bool = False,
        overlap: bool = False,
    ) -> None:
        self.workdir, self.duration_s, self.interval_s, self.worker_count = workdir, duration_s, interval_s, workers
        self.replicated: RedisHA | RedisClusterSet | None = None  # the pool's Redis, replicated
        self.ha, self.cluster = redis_ha, redis_cluster
        replicated = redis_ha or redis_cluster
        self.faults = faults or (*(HA_FAULTS if replicated else FAULTS), *(CLIENT_FAULTS if connect_clients else ()))
        self.client_count = connect_clients
        self.every_fault = every_fault  # the verdict fails unless each of self.faults ran
        self.overlap = overlap  # every fault has a second one injected while it is under way
        self.clients: list[subprocess.Popen[bytes]] = []
        self.client_pids: set[int] = set()
        self.clients_on = False  # like jobs, clients come once the pool is whole, and go at the drain
        self.random = random.Random(seed)
        self.seed = seed
        self.started = time.monotonic()
        self.pool_name = f"soak{os.getpid()}"
        self.network = f"cinnamon-soak-{os.getpid()}"
        self.history = workdir / "history"
        self.history.mkdir(parents=True)
        self.served = self.history / "served"  # each container's own record of what it served (fake-mcp)
        self.served.mkdir()
        self.served.chmod(0o777)
        self.docker = docker.from_env(timeout=60)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.supervisor: subprocess.Popen[bytes] | None = None
        self.submitted: list[str] = []
        self.convergence: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.proxies: dict[str, FaultProxy] = {}
        self.logs, self.logs_mounted = workdir / "logs", False
        self.part_env: dict[str, dict[str, str]] = {}

    def sweep_stale(self) -> None:
        """Containers and networks of an earlier soak that was killed before its teardown."""
        for container in self.docker.api.containers(all=True, filters={"label": "cinnamon.managed=true"}):
            owner = container["Labels"].get("cinnamon.pool", "").removeprefix("soak")
            networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
            if owner.isdigit() and f"cinnamon-soak-{owner}" in networks and not Path(f"/proc/{owner}").exists():
                with contextlib.suppress(docker.errors.APIError):
                    self.docker.api.remove_container(container["Id"], force=True)
        for network in self.docker.networks.list(filters={"label": "cinnamon.test=soak"}):
            owner = network.name.removeprefix("cinnamon-soak-")
            if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                with contextlib.suppress(docker.errors.APIError):
                    network.remove()

    def start_parts(self) -> None:
        if "restart-dockerd" in self.faults and not self.our_dockerd():
            raise RuntimeError(f"restart-dockerd: no live dockerd in {DOCKERD_PID}: not restarting a daemon the project did not start")
        self.sweep_stale()
        self.queue_redis_process, self.queue_url = start_redis_server(self.workdir, preexec_fn=die_with_parent)
        if self.ha:
            ha = self.replicated = RedisHA(self.workdir / "redis-ha", die_with_parent)
            self.pool_port = ha.primary_port() or 0
            self.pool_url = f"redis://127.0.0.1:{self.pool_port}/0"
            sentinel = f'sentinels = {json.dumps(ha.sentinels)}\nservice = "{RedisHA.SERVICE}"\n'
        elif self.cluster:  # the pool's keys on a Redis Cluster; rq's queue stays on its own server
            cluster = self.replicated = RedisClusterSet(self.workdir / "redis-cluster", die_with_parent)
            self.pool_url, self.pool_port, sentinel = cluster.url, 0, ""
        else:
            self.pool_port = free_port()
            self.pool_redis_process, self.pool_url = start_redis_server(self.workdir, self.pool_port, die_with_parent)
            sentinel = ""
            self.proxies = {part: FaultProxy(self.pool_port) for part in ("workers", "gateway")}  # network faults go here
        if "full-disk" in self.faults:  # the daemons' logs on a filesystem the fault can fill
            self.logs.mkdir()
            mount = ["mount", "-t", "tmpfs", "-o", f"size={LOGS_TMPFS_SIZE}", f"cinnamon-soak-{os.getpid()}", str(self.logs)]
            mounted = subprocess.run(mount, capture_output=True, text=True, check=False)
            self.logs_mounted = mounted.returncode == 0
            if not self.logs_mounted:  # a container without CAP_SYS_ADMIN, say: the other faults still run
                self.faults = tuple(fault for fault in self.faults if fault != "full-disk")
                say(f"full-disk left out: no tmpfs for the logs ({mounted.stderr.strip() or mounted.returncode})", self.started)
        self.docker.networks.create(self.network, driver="bridge", labels={"cinnamon.test": "soak"})
        self.config_path = self.workdir / "pool.toml"
        self.config_path.write_text(
            f'[redis]\nurl = "{self.pool_url}"\n{sentinel}'
            f'[pool]\nname = "{self.pool_name}"\nmin_size = 2\nmax_size = 4\ninitial_size = 3\n'
            f'[container]\nimage = "{FAKE_IMAGE}"\nvolumes = ["/usr:/usr:ro", "{self.served}:/served"]\nnetwork = "{self.network}"\n'
            'env = { FAKE_MCP_RECORD_DIR = "/served" }\n'
            f'host_port_range = "{PORTS}"\nmemory = "256m"\n'
            f"[rules]\nlease_ttl_s = {TTL_S}\nmax_lease_s = 60\ntick_s = 0.5\nhealth_interval_s = 1\nhealth_timeout_s = 1\n"
            "health_failures = 2\nscale_cooldown_s = 5\nidle_shrink_s = 20\nleader_lease_s = 3\nleader_renew_deadline_s = 2\n"
            "leader_retry_s = 0.3\ncanary_share = 0.2\ncanary_timeout_s = 5\n"
            f'[logs]\ndir = "{self.logs}"\n[metrics]\nport = 0\n[gateway]\nlisten = "127.0.0.1:{free_port()}"\n'
            f"session_idle_s = {CONNECT_IDLE_S}\n"
        )
        self.config = PoolConfig.load(self.config_path)
        self.pool = ContainerPool(self.config, client=redis_client(self.config.redis, pool=self.pool_name, socket_timeout=2))
        self.queue_client = redis.Redis.from_url(self.queue_url)
        self.queue = Queue("soak", connection=self.queue_client, serializer=JSONSerializer)
        self.env = {
            **os.environ,
            "CINNAMON_CONFIG": str(self.config_path),
            "CINNAMON_REDIS_URL": self.pool_url,
            "CINNAMON_TEST_HISTORY": str(self.history),
        }
        self.part_env = {
            part: {**self.env, "CINNAMON_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0"} for part, proxy in self.proxies.items()
        }
        self.start_supervisor()
        self.start_gateway()  # jobs reach containers through it
        for _ in range(self.worker_count):
            self.start_worker()
        if self.client_count:
            self.api_key = ApiKeys(self.pool.store.redis, self.pool_name).create("soak", max_sessions=self.client_count + 2)
            self.api_key_records = self.pool.store.redis.hgetall(PoolKeys(self.pool_name).api_keys)

    def _spawn(self, command: list[str], log: str, part: str = "") -> subprocess.Popen[bytes]:
        """Start one of the soak's processes; a ``part`` with a proxy reaches the pool's Redis through it."""
        out = (self.workdir / log).open("ab")
        env = self.part_env.get(part, self.env)
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=die_with_parent)
        self.processes.append(process)
        return process

    def start_supervisor(self) -> None:
        self.supervisor = self._spawn([str(Path(sys.executable).parent / "cinnamon-pool"), "supervise"], "supervisor.log")

    def start_gateway(self) -> None:
        self.gateway = self._spawn([str(Path(sys.executable).parent / "cinnamon-pool"), "gateway"], "gateway.log", "gateway")

    def wait_gateway_answers(self, within_s: float = 30.0) -> None:
        """Until the gateway answers its metrics page (it listens once its start-up is done)."""
        deadline = time.monotonic() + within_s
        while not self.gateway_answers() and time.monotonic() < deadline and self.gateway.poll() is None:
            time.sleep(0.05)

    def gateway_answers(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.config.gateway.base_url}/metrics", timeout=2).status_code == 200
        return False

    def start_worker(self) -> None:
        self.workers.append(self._spawn(rq_worker_command(self.queue_url, "soak", burst=False, root=ROOT), "workers.log", "workers"))

    def start_client(self) -> None:
        url = f"{self.config.gateway.base_url}/{self.pool_name}/mcp"
        client = self._spawn([sys.executable, "-m", "tests.faults.connect_client", url, self.api_key, str(self.history)], "clients.log")
        self.clients.append(client)
        self.client_pids.add(client.pid)

    def restore_api_key(self) -> None:
        """What an operator restores after Redis lost its data: the soak's API key (as stored)."""
        if self.client_count:
            keys = PoolKeys(self.pool_name)
            with contextlib.suppress(redis.RedisError):
                for digest, record in self.api_key_records.items():
                    self.pool.store.redis.hset(keys.api_keys, digest, record)
                    self.pool.store.redis.hset(keys.api_key_names, json.loads(record)["name"], digest)

    def keep_workers(self) -> None:
        """A process manager's job: a worker (or client on connect) that exited is replaced."""
        alive = [w for w in self.workers if w.poll() is None]
        for _ in range(self.worker_count - len(alive)):
            self.start_worker()
        self.workers = [w for w in self.workers if w.poll() is None]
        if self.clients_on:
            clients = [c for c in self.clients if c.poll() is None]
            for _ in range(self.client_count - len(clients)):
                self.start_client()
            self.clients = [c for c in self.clients if c.poll() is None]

    def pool_containers(self) -> list[dict[str, Any]]:
        return self.docker.api.containers(all=True, filters={"label": f"cinnamon.pool={self.pool_name}"})  # type: ignore[no-any-return]

    def whole(self) -> bool:
        """Containers serving (or leased) as Docker runs them, the minimum size, the gateway answering."""
        try:
            status = self.pool.status()
        except StoreError:
            return False
        registered = {c["container_id"]: c["state"] for c in status["containers"]}
        running = {c["Id"] for c in self.pool_containers() if c["State"] == "running"}
        return (
            self.gateway_answers()
            and len(registered) >= self.config.pool.min_size
            and all(state in {"available", "allocated"} for state in registered.values())
            and set(registered) == running
        )

    def wait_whole(self, fault: str, injected: float, over: Callable[[], bool] = lambda: True, *, workers: bool = True) -> None:
        deadline = injected + CONVERGE_WAIT_S
        while time.monotonic() < deadline:
            if workers:
                self.keep_workers()
            if self.whole() and over():
                seconds = time.monotonic() - injected
                self.convergence.append({"fault": fault, "seconds": round(seconds, 2)})
                say(f"{fault}: whole again after {seconds:.1f} s", self.started)
                return
            time.sleep(0.1)
        self.convergence.append({"fault": fault, "seconds": None})
        say(f"{fault}: NOT whole after {CONVERGE_WAIT_S:.0f} s", self.started)

    def submit(self, stop_event: threading.Event) -> None:
        """Keep a few jobs queued, so workers are always busy and jobs wait for containers."""
        while not stop_event.is_set():
            try:
                if self.queue.count < self.worker_count:
                    job = self.queue.enqueue(
                        "tests.faults.jobs.browse", 3, 0.15, job_timeout=45, retry=Retry(max=RETRIES), result_ttl=86400, failure_ttl=86400
                    )
                    with self.lock:
                        self.submitted.append(job.id)
                    continue
            except redis.RedisError:
                pass
            time.sleep(0.1)

    def run(self) -> dict[str, Any]:
        say(
            f"pool {self.pool_name}: {self.worker_count} workers, faults every {self.interval_s:g} s for {self.duration_s:g} s",
            self.started,
        )
        self.start_parts()
        self.wait_whole("start", self.started)
        self.clients_on = True
        self.keep_workers()
        stop_submitting = threading.Event()
        submitter = threading.Thread(target=self.submit, args=(stop_submitting,), daemon=True)
        injected: collections.Counter[str] = collections.Counter()
        with StreamTail(
            lambda: redis_client(self.config.redis, pool=self.pool_name, socket_timeout=5, decode_responses=True),
            self.pool_name,
            self.history,
        ):
            submitter.start()
            end = time.monotonic() + self.duration_s
            deck: list[str] = []  # the faults in rounds: each kind once per round, in a random order
            while True:
                pause = self.interval_s * self.random.uniform(0.5, 1.0)
                if time.monotonic() + pause + PAUSE_S > end:
                    break
                time.sleep(pause)
                deck = deck or self.random.sample(self.faults, len(self.faults))
                fault = deck.pop()
                injected[fault] += 1
                say(f"fault: {fault} ({len(self.submitted)} jobs submitted so far)", self.started)
                second = self.overlap_with(fault, deck) if self.overlap else None
                if second is None:
                    self.wait_whole(fault, *self.inject(fault))
                else:
                    injected[second] += 1
                    self.wait_whole(f"{fault}+{second}", *self.overlapping(fault, second))
            while time.monotonic() < end:
                self.keep_workers()
                time.sleep(0.2)
            stop_submitting.set()
            submitter.join()
            self.drain()
        return self.summary(injected)

    def overlap_with(self, fault: str, deck: list[str]) -> str | None:
        """The next fault of ``deck`` (taken from it) to inject while ``fault`` is under way: none
        of its family, and not a second one that starts a process again (the round is refilled
        when it holds only those)."""
        family = next((names for names in FAMILIES if fault in names), {fault})
        barred = family | (SPAWNING if fault in SPAWNING else set())
        if not any(name not in barred for name in deck):
            deck[:0] = self.random.sample(self.faults, len(self.faults))
        second = next(name for name in reversed(deck) if name not in barred)
        deck.remove(second)
        return second

    def drain(self) -> None:
        """Let the submitted jobs finish, then stop the workers; jobs a killed worker left
        behind are failed by rq's own cleanup."""
        say("draining: no new jobs", self.started)
        deadline = time.monotonic() + 120
        registry = StartedJobRegistry("soak", connection=self.queue_client, serializer=JSONSerializer)
        # Until every job has an outcome: an empty queue and registry are not enough, since a
        # work horse stopped right after its fork has dequeued a job it has not yet marked started.
        while time.monotonic() < deadline and self.unfinished():
            self.keep_workers()
            registry.cleanup()
            time.sleep(0.5)
        self.clients_on = False
        for process in (*self.workers, *self.clients):  # a client on connect ends its session, then exits
            process.send_signal(signal.SIGTERM)
        for worker in (*self.workers, *self.clients):
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:  # a stuck worker is killed, and that is a fault like any other
                hit = self.jobs_of_workers({worker.pid})
                began = monotonic_ms()
                worker.kill()
                worker.wait()
                record_fault(
                    self.history, self.queue_client, "kill-stuck-worker", [worker.pid, *children(worker.pid)], jobs=hit, began_mono=began
                )

    def teardown(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait(timeout=10)
        for container in self.pool_containers():
            with contextlib.suppress(docker.errors.APIError):
                self.docker.api.remove_container(container["Id"], force=True)
        with contextlib.suppress(docker.errors.APIError, docker.errors.NotFound):
            self.docker.networks.get(self.network).remove()
        sweep_egress(self.docker)  # the firewall rules its supervisors kept for the network
        for proxy in self.proxies.values():
            proxy.close()
        if self.logs_mounted:  # the logs go with it: copy what is left beside the history first
            with contextlib.suppress(OSError):
                shutil.copytree(self.logs, self.workdir / "logs-kept", dirs_exist_ok=True)
            subprocess.run(["umount", "--lazy", str(self.logs)], check=False)
        if self.replicated is not None:
            self.replicated.stop()
        for name in ("pool_redis_process", "queue_redis_process"):
            server: subprocess.Popen[bytes] | None = getattr(self, name, None)
            if server is not None:
                stop(server)


@contextlib.contextmanager
def soak(run: Soak) -> Iterator[Soak]:
    """``run``, torn down however it ends."""
    try:
        yield run
    finally:
        run.teardown()
