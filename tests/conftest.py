"""Shared fixtures: a real redis-server per session, fakeredis, the real Docker engine.

Every container and network a test creates carries labels naming the test session and is
removed when the test ends, pass or fail.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import fakeredis
import pytest
import redis

from cinnamon_pool.config import PoolConfig
from tests.support import free_port, start_redis_server, stop, sweep_egress, wait_for_http

ROOT = Path(__file__).resolve().parent.parent
FAKE_IMAGE = "cinnamon-pool/fake-mcp:test"
PLAYWRIGHT_IMAGE = "cinnamon-pool/playwright-mcp:local"
REDIS_IMAGE = "cinnamon-pool/redis:local"  # (make images): an image with no door, for doctor
SESSION = secrets.token_hex(4)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on loopback for this test session; its URL."""
    try:
        process, url = start_redis_server(tmp_path_factory.mktemp("redis"))
    except RuntimeError as error:
        pytest.fail(str(error))
    yield url
    stop(process)


@pytest.fixture
def real_redis(redis_server: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def pool_name() -> str:
    return f"t{SESSION}{secrets.token_hex(3)}"


_next_port_block = iter(range(3100, 3999, 10))


def test_config(pool_name: str, redis_url: str, *, image: str = FAKE_IMAGE, size: int = 2, network: str, **rules: float) -> PoolConfig:
    """A pool configuration for tests: its own pool name, network and block of host ports. Direct
    mode (no gateway): these tests are about the supervisor and the leases; the gateway's own
    tests, the end-to-end tests, the demo, the compose stack and the soak go through a gateway."""
    low = next(_next_port_block)
    return PoolConfig.from_tables(
        {
            "redis": {"url": redis_url},
            "pool": {"name": pool_name, "min_size": min(size, 1), "max_size": max(size, 2), "initial_size": size},
            "container": {"image": image, "volumes": ["/usr:/usr:ro"], "network": network, "host_port_range": f"{low}-{low + 9}"},
            "rules": {"tick_s": 0.5, **rules},
            "gateway": {"listen": ""},
        }
    )


test_config.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as error:
        pytest.fail(f"no Docker engine answers ({error}): run `make services` (installs docker.io, starts dockerd)")
    yield client
    client.close()


@pytest.fixture(scope="session")
def test_network(docker_client: object) -> Iterator[str]:
    """One labelled bridge network for the session's pools; removed at the end."""
    name = f"cinnamon-test-{SESSION}"
    docker_client.networks.create(name, driver="bridge", labels={"cinnamon.test": SESSION})  # type: ignore[attr-defined]
    yield name
    for network in docker_client.networks.list(names=[name]):  # type: ignore[attr-defined]
        network.remove()
    sweep_egress(docker_client)  # the firewall rules its supervisors kept (container.egress)


def _require_image(docker_client: object, image: str) -> None:
    try:
        docker_client.images.get(image)  # type: ignore[attr-defined]
    except Exception:
        pytest.fail(f"image {image} is missing: run `make images`")


@pytest.fixture
def fake_image(docker_client: object) -> str:
    _require_image(docker_client, FAKE_IMAGE)
    return FAKE_IMAGE


@pytest.fixture
def redis_image(docker_client: object) -> str:
    _require_image(docker_client, REDIS_IMAGE)
    return REDIS_IMAGE


@pytest.fixture
def playwright_image(docker_client: object) -> str:
    _require_image(docker_client, PLAYWRIGHT_IMAGE)
    return PLAYWRIGHT_IMAGE


@pytest.fixture
def pool_cleanup(docker_client: object, pool_name: str) -> Iterator[str]:
    """Remove every container of this test's pool when the test ends, pass or fail."""
    yield pool_name
    for container in docker_client.api.containers(all=True, filters={"label": f"cinnamon.pool={pool_name}"}):  # type: ignore[attr-defined]
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.api.remove_container(container["Id"], force=True)  # type: ignore[attr-defined]


FAKE_MCP = ROOT / "compose" / "images" / "fake-mcp" / "fake_mcp.py"


@pytest.fixture
def fake_endpoint() -> Iterator[str]:
    """The fake-mcp stand-in as a local process on loopback (no Docker); its base URL."""
    port = free_port()
    process = subprocess.Popen(["/usr/bin/python3", str(FAKE_MCP), "--host", "127.0.0.1", "--port", str(port)], stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/_fake/state", 10, "fake-mcp")
    yield base
    process.terminate()
    process.wait(timeout=10)


def trusted_gateway(base: str) -> str:
    """The TOML table that trusts ``base`` as a gateway URL: tests that register a record with
    the stand-in's endpoint themselves (no supervisor, no gateway) say so, as a user of an
    external gateway would (a grant naming an untrusted URL is refused, see endpoints.py)."""
    return f'[gateway]\ntrusted_urls = ["{base}"]\n'


def pytest_report_header() -> str:
    return f"cinnamon-pool test session {SESSION}: containers labelled cinnamon.pool=t{SESSION}*"
