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
