"""Example jobs: what a test author writes. Run them with a plain `rq worker` (README).

Each job gets a container of the pool for its own use (``container``), drives the real
playwright-mcp in it over MCP, and returns JSON-serializable results (the workers use rq's
JSON serializer: pickle would let anyone who can write to Redis run code in the workers).
"""

from __future__ import annotations

import re
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
    # Never the lease token: rq keeps results in Redis, readable by whoever reads the queue.
    return {"container": container.name, "test_run_id": container.test_run_id, "snapshot": snapshot}


SIGN_IN_PAGE = """<title>Sign in</title>
<h1>Sign in</h1>
<form onsubmit="event.preventDefault(); document.body.innerHTML = '<h1>Welcome, ' + this.email.value + '</h1>';">
  <label>Email <input name=email type=email></label>
  <button type=submit>Continue</button>
</form>"""


@with_container()
def sign_in_flow(email: str, *, container: ContainerLease, test_run_id: str | None = None) -> dict[str, Any]:
    """An end-to-end test as a job: open the sign-in page, type, click, assert, screenshot.

    A failed assertion fails the job as a test failure (the container is not blamed) and
    leaves the last snapshot and a screenshot under logs/artifacts/<date>/<test run id>/."""
    with Browser(container) as browser:
        browser.navigate(data_url(SIGN_IN_PAGE))
        snapshot = browser.snapshot()
        email_box, button = _ref(snapshot, "textbox", "Email"), _ref(snapshot, "button", "Continue")
        browser.type("Email field", email_box, email)
        browser.click("Continue button", button)
        after = browser.snapshot()
        assert f"Welcome, {email}" in after, f"expected the heading 'Welcome, {email}', page was:\n{after}"
        screenshot = browser.screenshot()
    return {"container": container.name, "test_run_id": container.test_run_id, "screenshot_bytes": len(screenshot)}


def _ref(snapshot: str, role: str, name: str) -> str:
    """The ref (e.g. e5) of the element with that role and accessible name in a snapshot."""
    match = re.search(rf'{role} "{re.escape(name)}"[^\n]*\[ref=(e\d+)\]', snapshot)
    if match is None:
        raise AssertionError(f"no {role} named {name!r} on the page:\n{snapshot}")
    return match.group(1)
