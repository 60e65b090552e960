"""The HTML report, opened in a real headless Chromium (the playwright-mcp image, through the
project's own `Browser`): no console errors, and every chart drew its marks.

`CINNAMON_REPORT_SCREENSHOT=docs/report.png make integration` (or this test alone) writes the
README's screenshot from the same page."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path

import pytest

from cinnamon_pool.browser import Browser
from cinnamon_pool.cli import main
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.health import readiness
from cinnamon_pool.lease.handle import ContainerLease
from cinnamon_pool.runtime.base import ContainerSpec, pool_labels
from cinnamon_pool.runtime.docker import DockerRuntime
from tests.conftest import test_config
from tests.report_log import an_afternoon

pytestmark = pytest.mark.docker
CHARTS = ["lease timeline", "jobs and errors per minute", "job durations", "waits for a container", "memory per container"]
DRAWN = """() => JSON.stringify([...document.querySelectorAll('svg')].map(svg => {
  const box = svg.getBoundingClientRect();
  const marks = [...svg.querySelectorAll('rect.lease, rect.bar, polyline.memory, line.restart')];
  const drawn = marks.filter(mark => { const b = mark.getBBox(); return b.width > 0 || b.height > 0; });
  return {label: svg.getAttribute('aria-label'), width: box.width, height: box.height, marks: marks.length, drawn: drawn.length};
}))"""


def _result(answer: str) -> object:
    """The value of a browser_evaluate answer (its '### Result' section)."""
    match = re.search(r"### Result\s*\n(.*?)(\n###|$)", answer, flags=re.DOTALL)
    assert match, answer
    value = json.loads(match.group(1).strip())
    return json.loads(value) if isinstance(value, str) else value


@pytest.fixture
def chromium(docker_client: object, playwright_image: str, pool_cleanup: str, test_network: str, redis_server: str) -> ContainerLease:
    """One playwright-mcp container, labeled as this test's pool (removed however the test ends)."""
    config: PoolConfig = test_config(pool_cleanup, redis_server, image=playwright_image, network=test_network, size=1)
    runtime = DockerRuntime(docker_client)
    port = config.container.host_ports[0]
    spec = ContainerSpec(
        pool_cleanup,
        1,
        f"cinnamon-{pool_cleanup}-report",
        port,
        config.container,
        pool_labels(pool_cleanup, 1, runtime.host),
        config.container.command_for(port),
    )
    observed = runtime.create(spec)
    endpoint = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 60
    while not readiness(endpoint, 2).ok:
        assert time.monotonic() < deadline, "playwright-mcp did not answer within 60 s"
        time.sleep(0.2)
    return ContainerLease(
        endpoint,
        observed.container_id,
        "container-001",
        "0123456789abcdef:1:0123456789abcdef",
        "report-check",
        pool_cleanup,
        fence_after_s=600,
    )


def test_the_report_renders_in_chromium_without_console_errors(
    chromium: ContainerLease, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    an_afternoon(tmp_path / "logs")
    monkeypatch.setenv("CINNAMON_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("CINNAMON_CONFIG", raising=False)
    page = tmp_path / "report.html"
    assert main(["report", "--html", str(page)]) == 0
    url = "data:text/html;base64," + base64.b64encode(page.read_bytes()).decode()
    with Browser(chromium, timeout_s=60) as browser:
        browser.call("browser_resize", {"width": 1000, "height": 900})
        browser.navigate(url)
        console = browser.call("browser_console_messages", {})
        charts = _result(browser.evaluate(DRAWN))
        shot = browser.call_raw("browser_take_screenshot", {"type": "png", "fullPage": True})
    assert re.search(r"\(Errors: 0, Warnings: 0\)", console), f"the page logged to the console: {console}"
    assert isinstance(charts, list) and [chart["label"] for chart in charts] == CHARTS
    for chart in charts:
        assert chart["width"] >= 800 and chart["height"] >= 80, chart
        assert chart["marks"] > 0 and chart["drawn"] == chart["marks"], f"{chart['label']}: every mark has a size on the page"
    timeline = next(chart for chart in charts if chart["label"] == "lease timeline")
    assert timeline["marks"] > 1000, "every lease of the 45 minutes, and the restarts"
    image = next(part for part in shot if getattr(part, "type", "") == "image")
    png = base64.b64decode(image.data)
    assert png.startswith(b"\x89PNG") and len(png) > 50_000
    target = os.environ.get("CINNAMON_REPORT_SCREENSHOT")
    if target:
        Path(target).write_bytes(png)


def test_the_console_errors_a_page_logs_are_counted_from_playwright_mcps_answers(chromium: ContainerLease) -> None:
    """The RELEASED record's Console Errors comes from the tool answers' console section."""
    page = "<h1>Checkout</h1><script>console.error('first'); console.error('second'); console.log('fine')</script>"
    with Browser(chromium, timeout_s=60) as browser:
        answer = browser.navigate("data:text/html," + page)
        browser.snapshot()
        browser.navigate("data:text/html,<h1>Thanks</h1><script>console.error('third')</script>")
        browser.snapshot()
    figures = chromium.figures
    assert figures.console_errors == 3, f"2 on the first page, 1 on the second: {answer}"
    assert figures.tool_calls == 4 and figures.tool_p50_s is not None and figures.tool_max_s is not None
    assert 0 < figures.tool_p50_s <= figures.tool_max_s
