"""The Docker adapter: the only module that imports ``docker``.

Listing uses the low-level ``/containers/json`` call with a label filter (one request, no
per-container inspect). Memory is read from the container's cgroup files (~0.04 ms) and falls
back to the stats API (~1 s per container) only when the files are not visible. Transient
engine errors are retried by tenacity; everything else is translated to
:class:`RuntimeUnavailable` at this boundary.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from tenacity import RetryError, Retrying, retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from cinnamon_pool import backoff
from cinnamon_pool.errors import ImageMissing, ImageRejected, RuntimeUnavailable
from cinnamon_pool.runtime import egress, seccomp
from cinnamon_pool.runtime.base import LABEL_POOL, ContainerSpec, ObservedContainer

T = TypeVar("T")
_TRANSIENT = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
_retry_transient = retry(
    retry=retry_if_exception_type(_TRANSIENT),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.1, max=1.0),
    reraise=True,
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUPS_KEPT = 4096  # cgroup directories remembered (a few per container)


def _read(path: str) -> str:
    with open(path) as file:
        return file.read()


def _translate(what: str, call: Callable[[], T]) -> T:
    try:
        return _retry_transient(call)()
    except docker.errors.ImageNotFound as error:
        raise ImageMissing(str(error.explanation or what), "build it (make images) or pull it") from error
    except docker.errors.APIError as error:
        raise RuntimeUnavailable(f"docker {what}: {error.explanation or error}") from error
    except (*_TRANSIENT, docker.errors.DockerException) as error:
        raise RuntimeUnavailable(f"docker {what}: {error}") from error


class DockerRuntime:
    def __init__(self, client: docker.DockerClient | None = None, *, cgroup_root: Path = CGROUP_ROOT, host: str = "") -> None:
        """``host`` names this Docker host in the pool (``pool.host``); "" = the name Docker reports."""
        try:
            self.client = client or docker.from_env(timeout=30)
            info = self.client.info()
        except docker.errors.DockerException as error:
            raise RuntimeUnavailable(f"no Docker daemon answers: {error}") from error
        self.api = self.client.api
        self.host = host or str(info.get("Name") or info.get("ID") or "docker")
        self.cgroup_root = cgroup_root
        self._cgroups: dict[tuple[tuple[str, ...], str], str] = {}  # (controllers, container id) -> its cgroup directory

    # -- observe ---------------------------------------------------------------------------
    def list(self, pool: str) -> list[ObservedContainer]:
        rows = _translate("list", lambda: self.api.containers(all=True, filters={"label": f"{LABEL_POOL}={pool}"}))
        return [_observed(row) for row in rows]

    def memory_mb(self, container_id: str) -> float | None:
        cheap = self.memory_mb_cheap(container_id)
        if cheap is not None:
            return cheap
        try:  # the cgroup files are not visible (a supervisor in a container): ask Docker
            stats = self.api.stats(container_id, stream=False, one_shot=True)
        except (docker.errors.DockerException, *_TRANSIENT):
            return None
        memory = stats.get("memory_stats") or {}
        if "usage" not in memory:
            return None
        inner = memory.get("stats") or {}
        usage = int(memory["usage"]) - int(inner.get("total_inactive_file", inner.get("inactive_file", 0)))
        return round(usage / (1024 * 1024), 1)

    def _cgroup(self, controllers: tuple[str, ...], container_id: str, read: Callable[[str], T | None]) -> T | None:
        """``read(directory)`` in the container's cgroup for these controllers: in the directory
        found before (a container's cgroup does not move, and a pool of 100 read three times a
        tick must not look for it every time), else in each place it may be: v1, then v2 with
        the systemd or cgroupfs driver. None when no directory can be read."""
        key, root = (controllers, container_id), self.cgroup_root
        known = self._cgroups.get(key)
        v1 = [f"{root}/{controller}/docker/{container_id}" for controller in controllers]
        places = [known] if known else [*v1, f"{root}/system.slice/docker-{container_id}.scope", f"{root}/docker/{container_id}"]
        for directory in places:
            try:
                value = read(directory)
            except (OSError, ValueError):
                continue
            if value is not None:
                if known is None:
                    if len(self._cgroups) >= CGROUPS_KEPT:  # containers come and go: forget the old ones now and then
                        self._cgroups.clear()
                    self._cgroups[key] = directory
                return value
        self._cgroups.pop(key, None)  # gone (removed, or restarted into another cgroup): look again next time
        return None

    def _cgroup_memory(self, container_id: str) -> int | None:
        def read(directory: str) -> int:
            v1 = os.path.exists(f"{directory}/memory.usage_in_bytes")
            usage = int(_read(f"{directory}/memory.usage_in_bytes" if v1 else f"{directory}/memory.current"))
            inactive_key = "total_inactive_file" if v1 else "inactive_file"
            for line in _read(f"{directory}/memory.stat").splitlines():
                key, _, value = line.partition(" ")
                if key == inactive_key:
                    return max(0, usage - int(value))
            return usage

        return self._cgroup(("memory",), container_id, read)

    def memory_mb_cheap(self, container_id: str) -> float | None:
        usage = self._cgroup_memory(container_id)
        return None if usage is None else round(usage / (1024 * 1024), 1)

    def cpu_seconds(self, container_id: str) -> float | None:
        """The cgroup's CPU counter: v2 ``cpu.stat`` usage_usec, v1 ``cpuacct.usage`` (ns). No
        ``docker stats`` fallback: a reading must stay as cheap as a file read."""

        def read(directory: str) -> float | None:
            if os.path.exists(f"{directory}/cpuacct.usage"):
                return int(_read(f"{directory}/cpuacct.usage")) / 1e9
            for line in _read(f"{directory}/cpu.stat").splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
            return None

        return self._cgroup(("cpuacct", "cpu,cpuacct"), container_id, read)

    def _frozen(self, container_id: str) -> bool:
        """Whether the container's cgroup is frozen (docker pause): v1 freezer.state, v2 cgroup.freeze."""

        def read(directory: str) -> bool:
            for name, frozen in (("freezer.state", "FROZEN"), ("cgroup.freeze", "1")):
                with contextlib.suppress(OSError):
                    return _read(f"{directory}/{name}").strip() in {frozen, "FREEZING"}
            raise OSError(f"no freezer file in {directory}")

        return bool(self._cgroup(("freezer",), container_id, read))

    def _cgroup_pids(self, container_id: str) -> tuple[int, ...] | None:
        """The host pids of the container's processes (its cgroup's ``cgroup.procs``); None when
        the cgroup files are not visible (a supervisor that runs in a container itself)."""
        return self._cgroup(
            ("pids",), container_id, lambda directory: tuple(int(pid) for pid in _read(f"{directory}/cgroup.procs").split())
        )

    def process_count(self, container_id: str) -> int | None:
        """How many processes (not threads: a server's request threads come and go) run in the
        container: the cgroup's ``cgroup.procs``, else ``docker top``; None when unknown."""
        pids = self._cgroup_pids(container_id)
        if pids is not None:
            return len(pids)
        try:
            return len(self.api.top(container_id).get("Processes") or [])
        except (docker.errors.DockerException, *_TRANSIENT):
            return None

    def exit_detail(self, container_id: str) -> str:
        try:
            state = self.api.inspect_container(container_id).get("State") or {}
        except (docker.errors.DockerException, *_TRANSIENT):
            return ""
        detail = f"exit code {state.get('ExitCode', '?')}"
        if state.get("OOMKilled"):
            detail += ", OOM-killed (raise container.memory or lower rules.max_memory_mb)"
        if state.get("Error"):
            detail += f", {state['Error']}"
        return detail

    def started_at(self, container_id: str) -> float | None:
        try:
            state = self.api.inspect_container(container_id).get("State") or {}
        except (docker.errors.DockerException, *_TRANSIENT):
            return None
        return _parse_docker_time(str(state.get("StartedAt", ""))) or None

    def image_present(self, image: str) -> bool:
        try:
            self.api.inspect_image(image)
            return True
        except docker.errors.ImageNotFound:
            return False
        except (docker.errors.DockerException, *_TRANSIENT) as error:
            raise RuntimeUnavailable(f"docker inspect image {image}: {error}") from error

    def image_id(self, image: str) -> str:
        return str(_translate(f"inspect image {image}", lambda: self.api.inspect_image(image))["Id"])

    def image_labels(self, image: str) -> dict[str, str]:
        attrs = _translate(f"inspect image {image}", lambda: self.api.inspect_image(image))
        return dict((attrs.get("Config") or {}).get("Labels") or {})

    def verify_image(self, image: str, pinned: str) -> None:
        """ImageRejected when ``pinned`` (an image id) is set and ``image`` resolves to another:
        the tag was moved to a different build, and nothing is started from it."""
        if pinned and (found := self.image_id(image)) != pinned:
            raise ImageRejected(image, f"it is {found[:19]}, but container.image_id pins {pinned[:19]}; nothing is started from it")

    def pull(self, image: str, progress: Callable[[str], None]) -> None:
        """Pull ``image``, reporting each layer's progress; ImageMissing when it cannot."""
        last_segment = image.split("/")[-1]
        repository, tag = (image.rsplit(":", 1)) if ":" in last_segment else (image, "latest")
        try:
            for event in self.api.pull(repository, tag=tag, stream=True, decode=True):
                if "error" in event:
                    raise ImageMissing(image, str(event["error"]))
                progress(f"     pulling {image}: {event.get('status', '')} {event.get('id', '')} {event.get('progress', '')}".rstrip())
        except (docker.errors.DockerException, *_TRANSIENT) as error:
            raise ImageMissing(image, f"pull failed: {error}") from error

    # -- act -------------------------------------------------------------------------------
    def ensure_network(self, name: str) -> None:
        """A bridge network with inter-container traffic off: a browser in one pool container
        cannot reach another container's MCP port."""
        if not _translate("network list", lambda: self.api.networks(names=[name])):
            try:
                self.api.create_network(
                    name, driver="bridge", labels={"cinnamon.managed": "true"}, options={"com.docker.network.bridge.enable_icc": "false"}
                )
            except docker.errors.APIError as error:
                if error.status_code != 409:  # created meanwhile by another supervisor
                    raise RuntimeUnavailable(f"docker create network {name}: {error.explanation}") from error

    def ensure_egress(self, network: str, allow: Sequence[str]) -> None:
        found = _translate("network list", lambda: self.api.networks(names=[network]))
        named = [n for n in found if n.get("Name") == network]
        if not named:
            raise RuntimeUnavailable(f"egress rules: no network {network!r}")
        bridge = (named[0].get("Options") or {}).get("com.docker.network.bridge.name") or f"br-{named[0]['Id'][:12]}"
        try:
            egress.enforce(network, bridge, allow, [n.get("Name", "") for n in _translate("network list", self.api.networks)])
        except egress.EgressUnenforced as error:
            raise RuntimeUnavailable(
                f"egress rules for {network}: {error} (the supervisor needs root in the host's network namespace; "
                'or set container.egress = "open" and keep the rules yourself, see docs/operations.md)'
            ) from error

    def create(self, spec: ContainerSpec) -> ObservedContainer:
        template = spec.template
        if not self.image_present(template.image):
            raise ImageMissing(template.image, "not present on this Docker host; build it (make images) or pull it")
        self.verify_image(template.image, template.image_id)
        kwargs: dict[str, Any] = dict(
            image=template.image,
            name=spec.docker_name,
            detach=True,
            labels=spec.labels,
            init=True,
            mem_limit=template.memory,
            memswap_limit=template.memory,
            nano_cpus=int(template.cpus * 1e9),
            pids_limit=template.pids_limit,
            # Chromium with its own sandbox needs namespaces that Docker's default profile refuses
            security_opt=["no-new-privileges", *([seccomp.security_option()] if "--sandbox" in spec.command else [])],
            cap_drop=["ALL"],
            read_only=template.read_only,
            tmpfs={path: "rw,nosuid,nodev,size=256m" for path in template.tmpfs},
            restart_policy={"Name": "no"},
            network=template.network,
            environment={**template.env, **spec.env},
            volumes=list(template.volumes),
            ports={f"{template.port}/tcp": ("127.0.0.1", spec.host_port)} if spec.host_port else {},
        )
        if spec.command:
            kwargs["command"] = list(spec.command)
        if template.user:
            kwargs["user"] = template.user
        self._remove_by_name(spec.docker_name)  # a leftover of an interrupted create
        try:
            container = _translate("run", lambda: self.client.containers.run(**kwargs))
        except RuntimeUnavailable:
            self._remove_by_name(spec.docker_name)  # created but not started: leave nothing behind
            raise
        container.reload()
        return _observed_from_attrs(container.attrs)

    def _remove_by_name(self, docker_name: str) -> None:
        try:
            self.api.remove_container(docker_name, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as error:
            raise RuntimeUnavailable(f"docker remove {docker_name}: {error.explanation}") from error

    def remove(self, container_id: str) -> None:
        """Force-remove. A paused (frozen) container's processes get SIGKILL first: it would
        otherwise run on for a moment when Docker thaws it to stop it, long enough to serve a
        request that reached it during its last lease (seen in the soak: 17 ms after that lease
        was revoked). SIGKILL sent while frozen takes effect the moment it thaws. Only then: a
        container still being started has its `runc init` in the cgroup, and killing that breaks
        the start of whoever is starting it (seen in a test that starts a labelled orphan)."""
        if self._frozen(container_id):
            self.kill_processes(container_id)
        try:
            _retry_transient(lambda: self.api.remove_container(container_id, force=True))()
        except docker.errors.NotFound:
            return
        except (docker.errors.DockerException, *_TRANSIENT) as error:
            raise RuntimeUnavailable(f"docker remove {container_id[:12]}: {error}") from error

    def kill_processes(self, container_id: str) -> int:
        """SIGKILL every process of the container (frozen ones die the moment they thaw);
        returns how many were signalled (0 when the cgroup files are not visible)."""
        signalled = 0
        for pid in self._cgroup_pids(container_id) or ():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                signalled += 1
        return signalled

    def restart(self, container_id: str) -> ObservedContainer:
        _translate("restart", lambda: self.api.restart(container_id, timeout=5))
        return _observed_from_attrs(_translate("inspect", lambda: self.api.inspect_container(container_id)))

    def watch_events(self, pool: str, wake: threading.Event, stop: threading.Event) -> None:
        """Wake the loop on container events; when the stream breaks, connect again at once, then
        with back-off (``backoff.DOCKER_EVENTS``) while Docker does not answer."""

        def pause(seconds: float) -> None:
            stop.wait(seconds)  # a stop cuts the pause short

        connect = Retrying(
            retry=retry_if_exception_type((docker.errors.DockerException, *_TRANSIENT, OSError)),
            wait=backoff.DOCKER_EVENTS,
            stop=lambda _state: stop.is_set(),
            sleep=pause,
        )
        filters = {"type": "container", "label": f"{LABEL_POOL}={pool}"}
        while not stop.is_set():
            try:
                stream = connect(self.api.events, decode=True, filters=filters)
                for _event in stream:
                    wake.set()
                    if stop.is_set():
                        stream.close()
                        return
            except (RetryError, docker.errors.DockerException, *_TRANSIENT, OSError):
                pass  # stopped while connecting, or the stream broke
            stop.wait(backoff.after(backoff.DOCKER_EVENTS, 1))  # a stream that keeps ending is not a busy loop


def _observed(row: dict[str, Any]) -> ObservedContainer:
    port = next((p.get("PublicPort") for p in row.get("Ports") or [] if p.get("PublicPort")), None)
    names = row.get("Names") or ["/?"]
    return ObservedContainer(
        container_id=row["Id"],
        docker_name=names[0].lstrip("/"),
        labels=dict(row.get("Labels") or {}),
        status=str(row.get("State", "unknown")),
        host_port=int(port) if port else None,
        started_at=float(row.get("Created", 0)),
    )


def _observed_from_attrs(attrs: dict[str, Any]) -> ObservedContainer:
    bindings = (attrs.get("HostConfig") or {}).get("PortBindings") or {}
    port = next((b[0].get("HostPort") for b in bindings.values() if b), None)
    return ObservedContainer(
        container_id=attrs["Id"],
        docker_name=str(attrs.get("Name", "/?")).lstrip("/"),
        labels=dict((attrs.get("Config") or {}).get("Labels") or {}),
        status=str((attrs.get("State") or {}).get("Status", "unknown")),
        host_port=int(port) if port else None,
        started_at=_parse_docker_time(str((attrs.get("State") or {}).get("StartedAt", ""))),
    )


def _parse_docker_time(text: str) -> float:
    """Docker's RFC 3339 times carry nanoseconds, which ``fromisoformat`` does not take."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?", text)
    if not match:
        return 0.0
    fraction = float(match.group(2) or 0)
    return _dt.datetime.fromisoformat(match.group(1)).replace(tzinfo=_dt.UTC).timestamp() + fraction
