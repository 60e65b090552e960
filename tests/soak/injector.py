"""The soak's faults: each one injected, the rq jobs it hit recorded in the history, and a
condition for its end (tests/soak: the list of faults and what each does)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import redis
from rq import Worker
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from cinnamon_pool.errors import StoreError
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.model import ContainerState, container_name
from cinnamon_pool.pool import ContainerPool
from tests.faults.history import monotonic_ms, record_fault
from tests.faults.proxy import Fault, FaultProxy
from tests.redis_cluster import RedisClusterSet
from tests.soak.settings import (
    CONVERGE_LIMIT_S,
    DOCKERD_PID,
    FULL_DISK_S,
    OVERLAP_AFTER_S,
    PARTITION_S,
    PAUSE_S,
    ROOT,
    SLOW_CHUNK_S,
    SLOW_S,
    SPAWNING,
    TTL_S,
    children,
    say,
)
from tests.support import RedisHA, die_with_parent, start_redis_server


class Injector:
    """What a :class:`tests.soak.runner.Soak` does to its parts (a mixin of it: what it uses of
    the soak is declared here, and made by ``Soak``)."""

    clients: list[subprocess.Popen[bytes]]
    docker: docker.DockerClient
    gateway: subprocess.Popen[bytes]
    history: Path
    pool: ContainerPool
    pool_port: int
    pool_redis_process: subprocess.Popen[bytes]
    logs: Path  # the daemons' logs folder (with full-disk: a tmpfs of its own)
    proxies: dict[str, FaultProxy]  # on one Redis: "workers" and "gateway", each their way to it
    queue_client: redis.Redis
    random: random.Random
    pool_name: str
    replicated: RedisHA | RedisClusterSet | None  # the pool's Redis with --redis-ha or --redis-cluster
    started: float
    supervisor: subprocess.Popen[bytes] | None
    workdir: Path
    workers: list[subprocess.Popen[bytes]]

    def pool_containers(self) -> list[dict[str, Any]]:
        raise NotImplementedError("made by Soak")

    def restore_api_key(self) -> None:
        raise NotImplementedError("made by Soak")

    def start_supervisor(self) -> None:
        raise NotImplementedError("made by Soak")

    def start_gateway(self) -> None:
        raise NotImplementedError("made by Soak")

    def wait_gateway_answers(self) -> None:
        raise NotImplementedError("made by Soak")

    @staticmethod
    def our_dockerd() -> int:
        """The pid of the dockerd compose/scripts/services.sh started, if it lives (else 0)."""
        pid = int(DOCKERD_PID.read_text()) if DOCKERD_PID.exists() else 0
        return pid if pid and Path(f"/proc/{pid}").exists() else 0

    def horses(self) -> list[int]:
        return [pid for worker in self.workers if worker.poll() is None for pid in children(worker.pid)]

    def wait_stopped(self, container_id: str) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(c["Id"] != container_id or c["State"] != "running" for c in self.pool_containers()):
                return
            time.sleep(0.05)

    def victim_lease(self, pid: int) -> str | None:
        """The token a process held when it was hit (acquired, not yet released), from its history."""
        path = self.history / f"client-{pid}.jsonl"
        token = None
        for line in path.read_text().splitlines() if path.exists() else []:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record["op"] == "acquire" and record["phase"] == "ok":
                    token = record["token"]
                elif record["op"] == "release":
                    token = None
        return token

    def lease_gone(self, token: str | None) -> Callable[[], bool]:
        def gone() -> bool:
            try:
                return token is None or all(lease.token != token for lease in self.pool.store.snapshot().leases.values())
            except StoreError:
                return False

        return gone

    def leading_count(self) -> int:
        return (self.workdir / "supervisor.log").read_text().count(": leading for host")

    def jobs_of_workers(self, pids: set[int]) -> list[str]:
        """The rq jobs the workers with these pids (or whose work horses have them) are running."""
        found, parents = [], {self.parent(pid) for pid in pids}
        for worker in Worker.all(connection=self.queue_client):
            if worker.pid in pids or worker.pid in parents:
                job = worker.get_current_job_id()
                if job:
                    found.append(job)
        return found

    @staticmethod
    def parent(pid: int) -> int:
        with contextlib.suppress(OSError, IndexError, ValueError):
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        return 0

    def jobs_holding(self, container: str) -> list[str]:
        """The rq job that holds ``container``'s lease, if any."""
        with contextlib.suppress(StoreError):
            lease = self.pool.store.snapshot().leases.get(container)
            if lease is not None and lease.job_id:
                return [lease.job_id]
        return []

    def granted_until_gone(self, name: str, container_id: str) -> list[str]:
        """The jobs that hold ``name`` from now until the supervisor has replaced (or removed) the
        container ``container_id`` behind it: a job granted the dead container in the meantime
        loses its lease to the fault too."""
        held: list[str] = []
        deadline = time.monotonic() + CONVERGE_LIMIT_S
        while time.monotonic() < deadline:
            held += [job for job in self.jobs_holding(name) if job not in held]
            with contextlib.suppress(StoreError):
                record = self.pool.store.snapshot().containers.get(name)
                if (
                    record is None
                    or record.container_id != container_id
                    or record.state in {ContainerState.RESTARTING, ContainerState.DRAINING}
                ):
                    break
            time.sleep(0.05)
        return held

    def jobs_in_history(self, since_mono: float, granted: str = "") -> list[str]:
        """The jobs whose processes wrote a history line from ``since_mono`` until now (``granted``:
        only those granted that container meanwhile): what a fault struck while it was being
        done, though they had failed and been queued again before any registry could be read."""
        until = monotonic_ms()
        found: list[str] = []
        for path in self.history.glob("client-*.jsonl"):
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError, KeyError):
                    record = json.loads(line)
                    if not since_mono <= record["mono"] <= until or not record.get("job") or record["job"] in found:
                        continue
                    if not granted or (record["op"] == "acquire" and record["phase"] == "ok" and record["container"] == granted):
                        found.append(record["job"])
        return found

    def jobs_in_flight(self) -> list[str]:
        """Every job a worker has started (holding a container or waiting for one)."""
        return list(StartedJobRegistry("soak", connection=self.queue_client, serializer=JSONSerializer).get_job_ids())

    def overlapping(self, first: str, second: str) -> tuple[float, Callable[[], bool]]:
        """Inject ``first``, and ``second`` while ``first`` is under way (it begins 0.2-2 s after
        it; a stop or a pause lasts seconds); as :meth:`inject`, for both: the later moment the
        pool is left to itself, and both faults' conditions for their end. The one that starts a
        process again (at most one: ``SPAWNING``) is injected from this thread, the other from a
        thread of its own."""
        later = self.random.uniform(*OVERLAP_AFTER_S)
        here, there = (first, second) if first in SPAWNING else (second, first)
        outcome: list[tuple[float, Callable[[], bool]] | BaseException] = []

        def inject(fault: str, after_s: float) -> tuple[float, Callable[[], bool]]:
            time.sleep(after_s)
            if fault == second:
                say(f"fault: {second}, while {first} is under way", self.started)
            return self.inject(fault)

        def inject_there() -> None:
            try:
                outcome.append(inject(there, later if there == second else 0.0))
            except BaseException as error:  # raised again below, in the soak's own thread
                outcome.append(error)

        thread = threading.Thread(target=inject_there, name=f"fault {there}")
        thread.start()
        left_here, over_here = inject(here, later if here == second else 0.0)
        thread.join()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        left_there, over_there = outcome[0]
        return max(left_here, left_there), lambda: over_here() and over_there()

    def inject(self, fault: str) -> tuple[float, Callable[[], bool]]:
        """Do ``fault`` and record it with the jobs it hit; returns when the pool is left to itself
        (after a stop/pause ends) and what besides a whole pool shows the fault is over (a dead
        holder's lease ended, a new leader)."""
        client, began = self.queue_client, monotonic_ms()
        over: Callable[[], bool] = lambda: True  # noqa: E731
        if fault == "kill-worker":
            victim = self.random.choice([w for w in self.workers if w.poll() is None])
            hit = self.jobs_of_workers({victim.pid})
            struck = monotonic_ms()
            victim.kill()
            victim.wait()
            record_fault(self.history, client, fault, [victim.pid], jobs=hit, began_mono=began, killed_mono=struck)
        elif fault in {"kill-horse", "stop-horse"}:
            horses = self.horses()
            if not horses:
                return self.inject("kill-container")
            victim_pid = self.random.choice(horses)
            hit = self.jobs_of_workers({victim_pid})
            over = self.lease_gone(self.victim_lease(victim_pid))
            struck = monotonic_ms()
            if fault == "kill-horse":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim_pid, signal.SIGKILL)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim_pid, signal.SIGSTOP)
                time.sleep(TTL_S + 2)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim_pid, signal.SIGCONT)
            record_fault(self.history, client, fault, [victim_pid], jobs=hit, began_mono=began, killed_mono=struck)
        elif fault in {"kill-container", "pause-container"}:
            running = [c for c in self.pool_containers() if c["State"] == "running"]
            if not running:
                return time.monotonic(), over
            target = self.random.choice(running)
            slot = str(target["Labels"].get("cinnamon.slot", ""))
            name = container_name(int(slot)) if slot.isdigit() else ""  # leases are by name, not slot
            hit = self.jobs_holding(name)
            with contextlib.suppress(docker.errors.APIError):
                if fault == "kill-container":
                    self.docker.api.kill(target["Id"])
                    self.wait_stopped(target["Id"])  # the clock starts once the engine says so
                else:
                    self.docker.api.pause(target["Id"])
                    time.sleep(PAUSE_S)
                    self.docker.api.unpause(target["Id"])
            if fault == "kill-container":
                hit += [job for job in self.granted_until_gone(name, target["Id"]) if job not in hit]
            else:
                hit += [job for job in self.jobs_holding(name) if job not in hit]  # granted while it was paused
            hit += [job for job in self.jobs_in_history(began, granted=name) if job not in hit]  # and gone since
            record_fault(self.history, client, fault, target=f"{name} {target['Id'][:12]}", jobs=hit, began_mono=began)
        elif fault == "kill-supervisor":
            assert self.supervisor is not None
            leading = self.leading_count()
            over = lambda: self.leading_count() > leading  # noqa: E731
            victim = self.supervisor
            struck = monotonic_ms()
            victim.kill()
            victim.wait()
            self.start_supervisor()
            record_fault(self.history, client, fault, [victim.pid], began_mono=began, killed_mono=struck)  # no job may fail for it
        elif fault == "restart-redis":
            hit = self.jobs_in_flight()
            victim = self.pool_redis_process
            struck = monotonic_ms()
            victim.kill()
            victim.wait()
            time.sleep(0.5)
            self.pool_redis_process, _ = start_redis_server(self.workdir, self.pool_port, die_with_parent)
            self.restore_api_key()
            hit += [job for job in [*self.jobs_in_flight(), *self.jobs_in_history(began)] if job not in hit]
            record_fault(self.history, client, fault, [victim.pid], jobs=hit, began_mono=began, killed_mono=struck)
        elif fault in {"kill-gateway", "restart-gateway"}:
            hit = self.jobs_in_flight()  # every job reaches its container through the gateway
            victim = self.gateway
            struck = monotonic_ms()
            if fault == "kill-gateway":
                victim.kill()
            else:  # a deploy: it stops listening, waits for open requests and streams (at most 10 s), exits
                victim.terminate()
            victim.wait(timeout=30)
            time.sleep(0.5)  # down a moment: its process manager starts it again
            self.start_gateway()
            # The fault lasts until the new gateway listens (1-3 s of start-up): a job that began
            # meanwhile could not connect, and its retry is the fault's doing too (a soak counted
            # three such jobs as retried with no fault to explain them).
            self.wait_gateway_answers()
            hit += [job for job in [*self.jobs_in_flight(), *self.jobs_in_history(began)] if job not in hit]
            record_fault(self.history, client, fault, [victim.pid], jobs=hit, began_mono=began, killed_mono=struck)
        elif fault == "kill-client":
            victim = self.random.choice([c for c in self.clients if c.poll() is None])
            over = self.lease_gone(self.victim_lease(victim.pid))  # the gateway ends its session once idle
            struck = monotonic_ms()
            victim.kill()
            victim.wait()
            record_fault(self.history, client, fault, [victim.pid], began_mono=began, killed_mono=struck)
        elif fault in {"partition-workers", "partition-gateway", "slow-redis"}:
            partition = fault.startswith("partition-")
            cut = [self.proxies[fault.removeprefix("partition-")]] if partition else [*self.proxies.values()]
            hit = self.jobs_in_flight() if partition else []  # a slow network must fail no job
            struck = monotonic_ms()
            for proxy in cut:
                if partition:  # a job cut off from Redis fences itself; a gateway cut off refuses (503)
                    proxy.set(Fault.DOWN)
                else:
                    proxy.set(Fault.LATENCY, SLOW_CHUNK_S)
            time.sleep(PARTITION_S if partition else SLOW_S)
            for proxy in cut:
                proxy.set(Fault.NONE)
            healed = monotonic_ms()
            if partition:
                hit += [job for job in [*self.jobs_in_flight(), *self.jobs_in_history(began)] if job not in hit]
            where = fault.removeprefix("partition-") if partition else "workers' and gateway's"
            record_fault(
                self.history,
                client,
                fault,
                target=f"{where} way to Redis",
                jobs=hit,
                began_mono=began,
                killed_mono=struck,
                ended_mono=healed,
            )
        elif fault == "restart-dockerd":
            pid = self.our_dockerd()
            if not pid:
                raise RuntimeError(f"restart-dockerd: no live dockerd in {DOCKERD_PID}: not restarting a daemon the project did not start")
            hit = self.jobs_in_flight()  # every container dies with the engine (restart policy "no")
            struck = monotonic_ms()
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            subprocess.run(["bash", str(ROOT / "compose" / "scripts" / "services.sh")], check=True, capture_output=True, timeout=180)
            hit += [job for job in [*self.jobs_in_flight(), *self.jobs_in_history(began)] if job not in hit]
            record_fault(self.history, client, fault, [pid], jobs=hit, began_mono=began, killed_mono=struck)
        elif fault == "full-disk":
            filler = self.logs / "filler"
            with filler.open("wb") as out, contextlib.suppress(OSError):  # to the last byte: ENOSPC ends it
                while True:
                    out.write(bytes(1 << 20))
                    out.flush()
            time.sleep(FULL_DISK_S)
            filler.unlink()
            healed = time.time()
            # over once the pool writes its daily files again (a release's record comes within seconds)
            over = lambda: any(path.stat().st_mtime > healed for path in (self.logs / "containers").glob("*.log"))  # noqa: E731
            record_fault(self.history, client, fault, target=str(self.logs), began_mono=began)  # no job may fail for it
        elif fault == "failover-redis":
            assert self.replicated is not None
            hit = self.jobs_in_flight()
            if isinstance(self.replicated, RedisClusterSet):  # the primary of the pool's slot
                old, new = self.replicated.kill_primary_of(PoolKeys(self.pool_name).meta)
            else:
                old, new = self.replicated.kill_primary()  # returns once Sentinel has promoted the replica
            say(f"failover-redis: primary {old} killed, {new} promoted", self.started)
            hit += [job for job in [*self.jobs_in_flight(), *self.jobs_in_history(began)] if job not in hit]
            record_fault(self.history, client, fault, target=f"{old} -> {new}", jobs=hit, began_mono=began)
            self.replicated.restart(old)  # as an operator would: it comes back as the new primary's replica
        return time.monotonic(), over
