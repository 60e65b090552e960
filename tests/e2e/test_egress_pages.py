"""container.egress with the real playwright-mcp: what a page can load. A service bound to
0.0.0.0 on the host, reached at the pool network's gateway address, does not load in a page
(the pool's firewall refuses it, even with Chromium sent there directly); with that address in
container.egress_allow it loads."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import docker
import pytest

from cinnamon_pool.browser import Browser, ToolError
from cinnamon_pool.pool import ContainerPool
from tests.e2e.conftest import Supervised
from tests.support import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.redis]
DOCKER_RANGES = ["172.16.0.0/12", "192.168.0.0/16"]  # where the engine puts its bridges' gateways
DIRECT = ["--headless", "--browser", "chromium", "--isolated", "--port", "8931", "--host", "0.0.0.0"]
DIRECT += ["--proxy-bypass", ",".join(["localhost", "127.0.0.1", *DOCKER_RANGES])]  # past the image's dead proxy: only the firewall is left


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<title>host service</title><h1>reached the host</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def host_service(supervised_pool: Supervised) -> Iterator[str]:
    """The URL of an HTTP service bound to 0.0.0.0 on the host, as the pool network sees it."""
    server = http.server.ThreadingHTTPServer(("0.0.0.0", free_port()), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    gateway = docker.from_env().networks.get(supervised_pool.config.container.network).attrs["IPAM"]["Config"][0]["Gateway"]
    yield f"http://{gateway}:{server.server_address[1]}/"
    server.shutdown()


@pytest.mark.parametrize("supervised_pool", [{"size": 1, "command": DIRECT}], indirect=True)
def test_a_page_cannot_load_a_host_service_by_default(supervised_pool: Supervised, host_service: str) -> None:
    pool = ContainerPool(supervised_pool.config)
    refused = pytest.raises(ToolError, match="ERR_CONNECTION_REFUSED")  # the firewall's REJECT (a dead proxy: ERR_PROXY_...)
    with pool.lease("egress-refused") as lease, Browser(lease, timeout_s=60) as browser, refused:
        browser.call("browser_navigate", {"url": host_service})


@pytest.mark.parametrize(
    "supervised_pool", [{"size": 1, "container": f"egress_allow = {DOCKER_RANGES!r}\n".replace("'", '"')}], indirect=True
)
def test_a_page_loads_what_egress_allow_lists(supervised_pool: Supervised, host_service: str) -> None:
    with ContainerPool(supervised_pool.config).lease("egress-allowed") as lease, Browser(lease, timeout_s=60) as browser:
        answer = browser.call("browser_navigate", {"url": host_service})
    assert "Page Title: host service" in answer, answer[:500]
