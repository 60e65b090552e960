"""The seam between the supervisor and a container engine.

The supervisor talks to a :class:`ContainerRuntime`; only ``runtime/docker.py`` imports
``docker``. Tests of the supervisor's decisions use ``tests/fakes.py``'s ``FakeRuntime``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cinnamon_pool.config import ContainerTemplate

LABEL_POOL = "cinnamon.pool"
LABEL_MANAGED = "cinnamon.managed"
LABEL_SLOT = "cinnamon.slot"
LABEL_HOST = "cinnamon.host"


def pool_labels(pool: str, slot: int, host: str) -> dict[str, str]:
    """The full label set of a pool container; the supervisor touches nothing without all of it."""
    return {LABEL_POOL: pool, LABEL_MANAGED: "true", LABEL_SLOT: str(slot), LABEL_HOST: host}


@dataclass(frozen=True)
class ContainerSpec:
    """One container to create: the template plus what differs per slot."""

    pool: str
    slot: int
    docker_name: str
    host_port: int | None
    template: ContainerTemplate
    labels: dict[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()  # what it runs (template.command_for: with --allowed-hosts); () = the image's
    env: dict[str, str] = field(default_factory=dict)  # added to the template's (its door secret)


@dataclass(frozen=True)
class ObservedContainer:
    """A container as the engine reports it."""

    container_id: str
    docker_name: str
    labels: dict[str, str]
    status: str  # created, running, paused, restarting, removing, exited, dead
    host_port: int | None = None
    started_at: float = 0.0  # from a listing: its creation; from an inspect: its last start

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def slot(self) -> int | None:
        try:
            return int(self.labels.get(LABEL_SLOT, ""))
        except ValueError:
            return None

    def belongs_to(self, pool: str, host: str) -> bool:
        """True only with the pool's full label set and this host's name (a partial set is never
        ours to touch; a container from before hosts were labelled counts as this host's)."""
        labels = self.labels
        return (
            labels.get(LABEL_POOL) == pool
            and labels.get(LABEL_MANAGED) == "true"
            and self.slot is not None
            and labels.get(LABEL_HOST, host) == host
        )


class ContainerRuntime(Protocol):
    host: str  # the engine's identity; container records name it so several hosts share a pool

    def list(self, pool: str) -> list[ObservedContainer]:
        """Every container carrying the pool's label, running or not (one call, no inspects)."""

    def create(self, spec: ContainerSpec) -> ObservedContainer:
        """Create and start; nothing is left behind when it fails."""

    def remove(self, container_id: str) -> None: ...

    def restart(self, container_id: str) -> ObservedContainer: ...

    def memory_mb(self, container_id: str) -> float | None:
        """Usage minus inactive file cache (what ``docker stats`` shows); None when unknown."""

    def memory_mb_cheap(self, container_id: str) -> float | None:
        """As ``memory_mb``, but only when it costs a file read (a cgroup): None otherwise."""

    def cpu_seconds(self, container_id: str) -> float | None:
        """CPU time the container has used (its cgroup's counter); None when unknown."""

    def process_count(self, container_id: str) -> int | None:
        """Processes running in the container (a browser left behind shows here); None when unknown."""

    def exit_detail(self, container_id: str) -> str:
        """How a stopped container ended ("exit code 137, OOM-killed"); "" when unknown."""

    def started_at(self, container_id: str) -> float | None:
        """When the container last started (epoch seconds; a restart in place moves it), None
        when unknown. An inspect: asked once per registration, never per tick."""

    def ensure_network(self, name: str) -> None: ...

    def ensure_egress(self, network: str, allow: Sequence[str]) -> None:
        """The host's firewall rules for ``network`` in place (runtime/egress.py), and those of
        networks that are gone removed; RuntimeUnavailable when this host cannot have them."""
        ...

    def image_present(self, image: str) -> bool: ...

    def watch_events(self, pool: str, wake: threading.Event, stop: threading.Event) -> None:
        """Set ``wake`` on every container event of the pool until ``stop`` is set."""
