"""container.egress on the real engine: the rules the supervisor's runtime keeps for a pool
network, seen from a process inside a container on it (the pages' network), and gone with it."""

from __future__ import annotations

import contextlib
import http.server
import secrets
import subprocess
import threading
from collections.abc import Iterator

import docker
import httpx
import pytest

from cinnamon_pool.runtime import egress
from cinnamon_pool.runtime.docker import DockerRuntime
from tests.support import free_port, sweep_egress

pytestmark = pytest.mark.docker
PROBE = """
import sys, urllib.request
for url in sys.argv[1:]:
    try:
        print(url, urllib.request.urlopen(url, timeout=3).status)
    except Exception as error:
        print(url, "refused", type(error).__name__)
"""


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    name = f"cinnamon-egress-{secrets.token_hex(3)}"
    yield name
    for found in docker_client.networks.list(names=[name]):
        for container in found.containers:
            container.remove(force=True)
        found.remove()
    sweep_egress(docker_client)


@pytest.fixture
def host_server() -> Iterator[int]:
    """An HTTP server bound to 0.0.0.0 on the host, as a careless host service is."""
    server = http.server.ThreadingHTTPServer(("0.0.0.0", free_port()), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def reach(docker_client: docker.DockerClient, image: str, network: str, *urls: str) -> dict[str, str]:
    """What a process in a container on ``network`` gets from each URL: a status, or "refused"."""
    output = docker_client.containers.run(
        image, ["-c", PROBE, *urls], entrypoint="/usr/bin/python3", network=network, volumes=["/usr:/usr:ro"],
        labels={"cinnamon.test": "egress"}, remove=True,
    )  # fmt: skip
    return dict(line.split(" ", 1) for line in output.decode().splitlines())


def test_restricted_egress_refuses_the_host_and_metadata_allows_what_is_listed_and_leaves_with_the_network(
    docker_client: docker.DockerClient, fake_image: str, network: str, host_server: int
) -> None:
    runtime = DockerRuntime(docker_client)
    runtime.ensure_network(network)
    gateway = docker_client.networks.get(network).attrs["IPAM"]["Config"][0]["Gateway"]
    host, metadata = f"http://{gateway}:{host_server}/", "http://169.254.169.254/"
    assert reach(docker_client, fake_image, network, host)[host] == "200", "without rules the host's 0.0.0.0 service answers"

    runtime.ensure_egress(network, [])
    seen = reach(docker_client, fake_image, network, host, metadata)
    assert seen[host].startswith("refused") and seen[metadata].startswith("refused"), seen
    published = docker_client.containers.run(
        fake_image, network=network, ports={"8931/tcp": ("127.0.0.1", free_port())}, labels={"cinnamon.test": "egress"},
        detach=True, volumes=["/usr:/usr:ro"],
    )  # fmt: skip
    published.reload()
    port = published.attrs["NetworkSettings"]["Ports"]["8931/tcp"][0]["HostPort"]
    answered = None
    for _ in range(50):
        with contextlib.suppress(httpx.HTTPError):
            answered = httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=2).status_code
            break
        threading.Event().wait(0.1)
    assert answered is not None, "the host's own connection to a published port (the gateway's way in) is still answered"

    runtime.ensure_egress(network, [f"{gateway}/32"])
    assert reach(docker_client, fake_image, network, host)[host] == "200", "egress_allow opens what the application needs"
    rules = [r for r in subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout.splitlines() if network in r]
    assert len(rules) == len(egress.rules(network, "br", [f"{gateway}/32"])), f"applied again, not twice: {rules}"

    published.remove(force=True)
    docker_client.networks.get(network).remove()
    sweep_egress(docker_client)
    left = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout
    assert f"{egress.PREFIX}{network}" not in left, "the rules went with the network"
