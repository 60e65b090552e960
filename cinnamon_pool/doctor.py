"""``cinnamon-pool doctor``: is this machine ready to run the pool? One line per check.

Each check says OK, WARN or FAIL, what it found, and for anything but OK the fix.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.connect import redis_client, slot_primary
from cinnamon_pool.door import IMAGE_LABEL, key_path, load_key
from cinnamon_pool.errors import CinnamonError, ConfigError, StoreError
from cinnamon_pool.lease.reads import PoolReads

if TYPE_CHECKING:
    from cinnamon_pool.runtime.docker import DockerRuntime


@dataclass(frozen=True)
class Check:
    status: str  # OK, WARN, FAIL
    name: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f" -- fix: {self.fix}" if self.fix and self.status != "OK" else ""
        return f"{self.status:<4} {self.name}: {self.detail}{fix}"


def run_checks(config: PoolConfig, progress: Callable[[str], None] = print) -> Iterator[Check]:
    yield from _docker_checks(config, progress)
    yield from _redis_checks(config)


def _docker_checks(config: PoolConfig, progress: Callable[[str], None]) -> Iterator[Check]:
    from cinnamon_pool.runtime.docker import DockerRuntime

    client = shutil.which("docker")
    yield Check(
        "OK" if client else "WARN", "docker client", client or "not on PATH", "apt-get install docker.io (the pool itself talks to the API)"
    )
    try:
        runtime = DockerRuntime()
    except CinnamonError as error:
        yield Check("FAIL", "docker daemon", str(error), "start dockerd (make services) or set DOCKER_HOST")
        return
    yield Check("OK", "docker daemon", f"answers (host {runtime.host})")
    image = config.container.image
    if runtime.image_present(image):
        yield Check("OK", "image", f"{image} is present")
    else:
        try:
            runtime.pull(image, progress)
            yield Check("OK", "image", f"{image} pulled")
        except CinnamonError as error:
            yield Check(
                "FAIL",
                "image",
                f"{image} is missing and cannot be pulled: {error}",
                "make images (builds the local images), or pull it where a registry is reachable",
            )
    yield from _pin_check(runtime, config)
    yield from _door_checks(runtime, config)
    template = config.container
    if template.sandboxed or not template.command:
        yield Check("OK", "chromium sandbox", template.sandbox_state)
    else:
        yield Check(
            "WARN",
            "chromium sandbox",
            f"{template.sandbox_state}: a renderer exploit owns the whole browser, and the container is the only boundary",
            "drop --no-sandbox from container.command and set container.chromium_sandbox = true",
        )
    try:
        runtime.ensure_network(config.container.network)
        yield Check("OK", "network", f"{config.container.network} present")
    except CinnamonError as error:
        yield Check("FAIL", "network", str(error), f"docker network create {config.container.network}")
        return
    yield from _egress_check(runtime, config)


def _egress_check(runtime: DockerRuntime, config: PoolConfig) -> Iterator[Check]:
    """Whether the pool network's firewall rules can be (and now are) in place."""
    template = config.container
    if template.egress == "open":
        yield Check("WARN", "egress", "open: containers reach the host, the LAN and 169.254.169.254", "apply docs/operations.md's rules")
        return
    try:
        runtime.ensure_egress(template.network, template.egress_allow)
        allowed = ", ".join(template.egress_allow) or "nothing"
        yield Check("OK", "egress", f"restricted on {template.network}: host, private ranges and metadata refused; allowed: {allowed}")
    except CinnamonError as error:
        yield Check("FAIL", "egress", str(error), 'run the supervisor as root on the host, or set container.egress = "open"')


def _door_checks(runtime: DockerRuntime, config: PoolConfig) -> Iterator[Check]:
    """Whether the containers answer only this host's gateway (door.py)."""
    if not config.gateway.enabled:
        yield Check("WARN", "door", "no gateway (direct mode): every local process reaches the containers", "set gateway.listen")
        return
    path = key_path(config)
    try:
        load_key(path)
        yield Check("OK", "door key", f"{path} (0600)")
    except (ConfigError, OSError) as error:
        yield Check("FAIL", "door key", str(error), "give the supervisor and the gateway one readable container.door_key")
    image = config.container.image
    if runtime.image_present(image) and IMAGE_LABEL in runtime.image_labels(image):
        yield Check("OK", "door", f"{image} has the door: its containers answer only with their secret")
    else:
        yield Check(
            "WARN",
            "door",
            f"{image} has no door (no {IMAGE_LABEL} label): any local process can drive its containers",
            "use the project's images (make images), or put compose/images/playwright-mcp/door.js in front of yours",
        )


def _pin_check(runtime: DockerRuntime, config: PoolConfig) -> Iterator[Check]:
    """Which image exactly the pool starts: pinned by id, by digest, or only by a movable tag."""
    template = config.container
    if template.image_id:
        try:
            runtime.verify_image(template.image, template.image_id)
            yield Check("OK", "image pin", f"container.image_id {template.image_id[:19]}... matches {template.image}")
        except CinnamonError as error:
            yield Check("FAIL", "image pin", str(error), "rebuild the pinned image, or update container.image_id to the new build")
    elif "@sha256:" in template.image:
        yield Check("OK", "image pin", f"pinned by digest ({template.image.split('@', 1)[1][:19]}...)")
    else:
        found = runtime.image_id(template.image) if runtime.image_present(template.image) else "?"
        yield Check(
            "WARN",
            "image pin",
            f"{template.image} is a tag (now {found[:19]}); whatever it points to next is started",
            f'pin it: container.image_id = "{found}" (or name@sha256:<digest> for a pulled image)',
        )


def eviction_policy(store: PoolReads) -> str:
    """Redis's ``maxmemory-policy``; any other than ``noeviction`` may drop lease keys under
    memory pressure, which would free a container still in use. Raises StoreError when CONFIG
    is not allowed (a managed Redis)."""
    return store.server_settings("maxmemory-policy").get("maxmemory-policy", "?")


def _redis_checks(config: PoolConfig) -> Iterator[Check]:
    client = redis_client(config.redis, pool=config.pool.name, socket_timeout=5)
    shown = config.redis.url.rpartition("@")[2]  # never print a password
    store = PoolReads(client, config.pool.name)
    try:
        store.ping()
    except StoreError as error:
        yield Check("FAIL", "redis", f"{shown}: {error.detail}", "start redis-server (make services) or fix redis.url / CINNAMON_REDIS_URL")
        return
    where = slot_primary(client)
    yield Check("OK", "redis", f"{shown} answers" + (f" (the pool's {where})" if where else ""))
    try:
        settings = store.server_settings("maxmemory-policy", "appendonly", "save")
    except StoreError as error:
        yield Check(
            "WARN", "redis settings", f"cannot read CONFIG ({error.detail})", "check maxmemory-policy noeviction and appendonly yes by hand"
        )
        return
    policy, persistence, save = settings.get("maxmemory-policy", "?"), settings.get("appendonly", "?"), settings.get("save", "")
    if policy == "noeviction":
        yield Check("OK", "redis eviction", "maxmemory-policy noeviction")
    else:
        yield Check(
            "FAIL",
            "redis eviction",
            f"maxmemory-policy {policy}: Redis may evict lease keys",
            "CONFIG SET maxmemory-policy noeviction (and in redis.conf)",
        )
    if persistence == "yes":
        yield Check("OK", "redis persistence", "appendonly yes")
    else:
        detail = f"appendonly {persistence}, save '{save}'"
        yield Check(
            "WARN", "redis persistence", f"{detail}: a restart loses the pool state (detected and recycled)", "CONFIG SET appendonly yes"
        )
