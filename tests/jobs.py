"""Job functions used by the tests, importable by real `rq worker` processes (--path ROOT)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from cinnamon_pool import Browser, ContainerLease, with_container


@with_container(acquire_timeout_s=30)
def call_endpoint_repeatedly(seconds: float, pid_file: str, *, container: ContainerLease) -> dict[str, Any]:
    """Call the leased endpoint every 50 ms for ``seconds``; every call checks the lease first."""
    Path(pid_file).write_text(str(os.getpid()))
    calls = 0
    deadline = time.monotonic() + seconds
    with Browser(container, timeout_s=10) as browser:
        while time.monotonic() < deadline:
            browser.navigate(f"data:text/html,call {calls}")
            calls += 1
            time.sleep(0.05)
    return {"calls": calls, "token": container.token}


@with_container(acquire_timeout_s=30)
def hold_and_sleep(seconds: float, pid_file: str, *, container: ContainerLease) -> str:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    return container.token


@with_container(acquire_timeout_s=30)
def open_page(fail_with: str, *, container: ContainerLease, test_run_id: str | None = None) -> str:
    """Open a page; then fail as asked ("" = pass, "assert" = the test fails, anything else is ignored)."""
    return _open_page(container, fail_with)


@with_container(acquire_timeout_s=30, artifacts="always")
def open_page_keeping_artifacts(fail_with: str, *, container: ContainerLease, test_run_id: str | None = None) -> str:
    return _open_page(container, fail_with)


@with_container(acquire_timeout_s=30, artifacts="never")
def open_page_keeping_nothing(fail_with: str, *, container: ContainerLease, test_run_id: str | None = None) -> str:
    return _open_page(container, fail_with)


def _open_page(container: ContainerLease, fail_with: str) -> str:
    with Browser(container, timeout_s=10) as browser:
        browser.navigate("data:text/html,<h1>Checkout</h1>")
        snapshot = browser.snapshot()
        if fail_with == "assert":
            raise AssertionError("expected the heading 'Thank you'")
    return snapshot


@with_container(acquire_timeout_s=30)
def open_page_within(timeout_s: float, *, container: ContainerLease) -> str:
    """Open a page, giving the endpoint ``timeout_s`` per call."""
    with Browser(container, timeout_s=timeout_s) as browser:
        browser.navigate("data:text/html,<h1>Checkout</h1>")
        return browser.snapshot()


ORIGIN_PAGE = "http://localhost:8931/cinnamon-storage-check"  # an http origin inside the container itself


@with_container(acquire_timeout_s=60)
def leave_state_behind(*, container: ContainerLease) -> dict[str, str]:
    """Set a cookie and localStorage on an http origin, and open a second tab."""
    with Browser(container, timeout_s=30) as browser:
        browser.navigate(ORIGIN_PAGE)
        browser.evaluate("() => { document.cookie = 'session=secret; max-age=3600'; localStorage.setItem('cart', '3 items'); }")
        found = browser.evaluate("() => JSON.stringify({cookie: document.cookie, cart: localStorage.getItem('cart')})")
        tabs = browser.call("browser_tabs", {"action": "new", "url": ORIGIN_PAGE})
        return {"container": container.name, "found": found, "tabs": tabs}


@with_container(acquire_timeout_s=60)
def look_for_state(*, container: ContainerLease) -> dict[str, str]:
    with Browser(container, timeout_s=30) as browser:
        browser.navigate(ORIGIN_PAGE)
        found = browser.evaluate("() => JSON.stringify({cookie: document.cookie, cart: localStorage.getItem('cart')})")
        tabs = browser.call("browser_tabs", {"action": "list"})
    return {"container": container.name, "found": found, "tabs": tabs}


@with_container
def open_page_bare(fail_with: str, *, container: ContainerLease, test_run_id: str | None = None) -> str:
    """The decorator written bare, as the design card writes it."""
    return _open_page(container, fail_with)


@with_container(acquire_timeout_s=300)
def wait_long_for_a_container(*, container: ContainerLease) -> str:
    """Asks for a longer wait than its rq timeout allows: the decorator caps it."""
    return container.name


@with_container(acquire_timeout_s=0.5, on_exhausted="requeue", requeue_delay_s=60)
def requeue_when_busy(*, container: ContainerLease) -> str:
    return container.name
