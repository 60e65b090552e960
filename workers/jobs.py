"""Example jobs: what a test author writes. Run them with a plain `rq worker` (README).

Each job gets a container of the pool for its own use (``container``), drives the real
playwright-mcp in it over MCP, and returns JSON-serializable results (the workers use rq's
JSON serializer: pickle would let anyone who can write to Redis run code in the workers).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from cinnamon_pool import Browser, ContainerLease, with_container


def data_url(html: str) -> str:
    """A page that needs no network: Chromium renders it from the URL itself."""
    return "data:text/html;charset=utf-8," + quote(html)


@with_container()
def snapshot_page(html: str, *, container: ContainerLease, test_run_id: str | None = None) -> dict[str, Any]:
    """Open ``html`` in the leased browser and return its accessibility snapshot."""
    with Browser(container) as browser:
        browser.navigate(data_url(html))
        snapshot = browser.snapshot()
    return {"container": container.name, "test_run_id": container.test_run_id, "token": container.token, "snapshot": snapshot}
