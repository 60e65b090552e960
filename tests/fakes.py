"""Hand-written fakes for unit tests of the supervisor's decisions (no Docker, no sleeps)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

from cinnamon_pool.errors import ImageMissing, RuntimeUnavailable
from cinnamon_pool.runtime.base import ContainerSpec, ObservedContainer


class FakeRuntime:
    """An in-memory container engine that records every call it gets."""

    def __init__(self, host: str = "fake-host") -> None:
        self.host = host
        self.containers: dict[str, ObservedContainer] = {}
        self.calls: list[tuple[str, str]] = []
        self.images = {"cinnamon-pool/fake-mcp:test"}
        self.memory: dict[str, float] = {}
        self.cpu: dict[str, float] = {}  # CPU seconds used, by container id
        self.processes: dict[str, int] = {}
        self.oom_killed: set[str] = set()
        self.started: dict[str, float] = {}  # when a container last started, as an inspect says (epoch s)
        self.restarted_at: float | None = None  # what a restart sets there
        self.down = False  # the engine does not answer
        self._ids = itertools.count(1)

    def list(self, pool: str) -> list[ObservedContainer]:
        self.calls.append(("list", pool))
        if self.down:
            raise RuntimeUnavailable("docker list: the engine does not answer (fake)")
        return [c for c in self.containers.values() if c.labels.get("cinnamon.pool") == pool]

    def create(self, spec: ContainerSpec) -> ObservedContainer:
        self.calls.append(("create", spec.docker_name))
        if spec.template.image not in self.images:
            raise ImageMissing(spec.template.image, "not present (fake)")
        container_id = f"{next(self._ids):064x}"
        container = ObservedContainer(
            container_id, spec.docker_name, dict(spec.labels), "running", spec.host_port, float(len(self.containers))
        )
        self.containers[container_id] = container
        return container

    def remove(self, container_id: str) -> None:
        self.calls.append(("remove", container_id))
        self.containers.pop(container_id, None)

    def restart(self, container_id: str) -> ObservedContainer:
        self.calls.append(("restart", container_id))
        if self.restarted_at is not None:
            self.started[container_id] = self.restarted_at
        return self.containers[container_id]

    def memory_mb(self, container_id: str) -> float | None:
        return self.memory.get(container_id)

    def memory_mb_cheap(self, container_id: str) -> float | None:
        return self.memory.get(container_id)

    def cpu_seconds(self, container_id: str) -> float | None:
        return self.cpu.get(container_id)

    def process_count(self, container_id: str) -> int | None:
        return self.processes.get(container_id, 2)

    def started_at(self, container_id: str) -> float | None:
        return self.started.get(container_id)

    def exit_detail(self, container_id: str) -> str:
        return "exit code 137, OOM-killed" if container_id in self.oom_killed else ""

    def ensure_network(self, name: str) -> None:
        self.calls.append(("ensure_network", name))

    def ensure_egress(self, network: str, allow: Sequence[str]) -> None:
        self.calls.append(("ensure_egress", network))

    def image_present(self, image: str) -> bool:
        return image in self.images

    def watch_events(self, pool: str, wake: threading.Event, stop: threading.Event) -> None:
        stop.wait()

    # -- test helpers --------------------------------------------------------------------
    def exit(self, container_id: str, status: str = "exited") -> None:
        old = self.containers[container_id]
        self.containers[container_id] = ObservedContainer(
            old.container_id, old.docker_name, old.labels, status, old.host_port, old.started_at
        )

    def add_foreign(self, labels: dict[str, str]) -> str:
        container_id = f"{next(self._ids):064x}"
        self.containers[container_id] = ObservedContainer(container_id, f"foreign-{container_id[-4:]}", labels, "running")
        return container_id
