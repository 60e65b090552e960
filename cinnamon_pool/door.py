"""The containers' door: a container answers MCP only to this host's gateway and supervisor.

A container's port is published on 127.0.0.1, and playwright-mcp checks only the Host header,
which any local process can send (and its refusal names the value it wants). So the pool's
images put a door in front of the server (``compose/images/playwright-mcp/door.js``): the
server listens on the container's own loopback, and the door forwards only requests that carry
the container's secret in ``X-Cinnamon-Door``.

The secret is an HMAC of the container's address on this host (``127.0.0.1:<published
port>``) under a host key, a random file only the pool's daemons read
(``container.door_key``; by default ``/var/lib/cinnamon-pool/door.key`` for root,
``~/.local/state/cinnamon-pool/door.key`` otherwise). The supervisor passes it to the container
in its environment at creation (``docker inspect`` shows it, to root); the gateway and the
probes derive it per request. Nothing of it is in Redis, so neither jobs nor API-key clients
ever see it. A pool without a gateway (direct mode) has no door: its jobs reach the containers
themselves, checked by Host only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Generator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.errors import ConfigError

HEADER = "X-Cinnamon-Door"
ENV = "CINNAMON_DOOR_SECRET"
TRACE_SCREENCAST = "CINNAMON_TRACE_SCREENCAST"  # "1": a lease's trace has its screencast
IMAGE_LABEL = "cinnamon.image.door"  # an image whose entrypoint has the door says so
KEY_BYTES = 32


def key_path(config: PoolConfig) -> Path:
    if config.container.door_key:
        return Path(config.container.door_key)
    if os.geteuid() == 0:
        return Path("/var/lib/cinnamon-pool/door.key")
    return Path.home() / ".local" / "state" / "cinnamon-pool" / "door.key"


def load_key(path: Path) -> bytes:
    """The host key at ``path``, made (0600, random) by the first daemon that needs it. A
    symlink, a file that is not regular or one of the wrong size is refused (ConfigError)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        _create(path)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        reason = "is a symlink" if error.errno == errno.ELOOP else f"cannot be read ({error.strerror})"
        raise ConfigError("container.door_key", str(path), reason) from None
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        key = handle.read(KEY_BYTES + 1)
    if not stat.S_ISREG(info.st_mode) or len(key) != KEY_BYTES:
        raise ConfigError("container.door_key", str(path), f"must be a regular file of {KEY_BYTES} bytes")
    if info.st_mode & 0o077:
        raise ConfigError("container.door_key", str(path), f"is readable by others (mode {info.st_mode & 0o777:o}); chmod 600 it")
    return key


def _create(path: Path) -> None:
    """Write a new key beside ``path`` and link it in place: two daemons starting at once both
    end up reading the one that won (``link`` fails on an existing name)."""
    draft = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
        owner = os.stat(path.parent)  # root making it for a gateway that runs as the folder's owner
        if os.geteuid() == 0 and owner.st_uid != 0:
            os.chown(draft, owner.st_uid, owner.st_gid)
        os.link(draft, path)
    finally:
        os.unlink(draft)


def secret(key: bytes, pool: str, address: str) -> str:
    """The door secret of the container at ``address`` (``127.0.0.1:<port>``) of ``pool``."""
    return hmac.new(key, f"{pool}\n{address}".encode(), hashlib.sha256).hexdigest()


class DoorAuth(httpx.Auth):
    """Adds the door secret to each request to one of the pool's containers on this host (a
    loopback URL on a port of ``container.host_port_range``), and to nothing else."""

    def __init__(self, config: PoolConfig, key: bytes) -> None:
        self.pool, self.key, self.ports = config.pool.name, key, config.container.host_ports
        self._secrets: dict[int, str] = {}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(self.headers(request.url.host, request.url.port))
        yield request

    def headers_for(self, url: str) -> dict[str, str]:
        """What a request to ``url`` carries for the door (nothing when it is not a container's)."""
        parts = urlsplit(url)
        return self.headers(parts.hostname or "", parts.port)

    def headers(self, host: str, port: int | None) -> dict[str, str]:
        """What a request to ``host``:``port`` carries for the door (nothing when it is not a container's)."""
        if host != "127.0.0.1" or port is None or port not in self.ports:
            return {}
        if port not in self._secrets:  # an HMAC per container, not per request
            self._secrets[port] = secret(self.key, self.pool, f"127.0.0.1:{port}")
        return {HEADER: self._secrets[port]}


def door_for(config: PoolConfig) -> DoorAuth | None:
    """This host's door, when the pool has one (a gateway); None in direct mode."""
    return DoorAuth(config, load_key(key_path(config))) if config.gateway.enabled else None


def container_env(config: PoolConfig, door: DoorAuth | None, host_port: int | None) -> dict[str, str]:
    """What a new container's environment carries for its door: its secret, and the trace
    options the image's init page reads (compose/images/playwright-mcp/trace-options.js)."""
    env = {TRACE_SCREENCAST: "1"} if config.container.records and config.container.artifacts_screenshots else {}
    if door is None or host_port is None:
        return env
    return {**env, ENV: secret(door.key, config.pool.name, f"127.0.0.1:{host_port}")}
