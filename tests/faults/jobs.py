"""Job functions for the fault tests and the soak, run by real `rq worker` processes.

When ``CINNAMON_TEST_HISTORY`` names a directory, importing this module (which rq does in the
work horse, before the job's lease is acquired) records every acquire, renew and release of
this process into that history, and the jobs record each use of the container.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from cinnamon_pool import Browser, ContainerLease, with_container
from cinnamon_pool.lease.store import LeaseStore
from tests.faults.history import ClientHistory, instrument, pool_redis_from_env

HISTORY: ClientHistory | None = None
if os.environ.get("CINNAMON_TEST_HISTORY"):
    HISTORY = ClientHistory(Path(os.environ["CINNAMON_TEST_HISTORY"]), pool_redis_from_env())
    instrument(LeaseStore, HISTORY)


def _use(container: ContainerLease, call: Callable[[], object]) -> None:
    """One use of the container: the lease is checked (self-fence), then ``call`` runs."""

    def checked() -> object:
        container.check()
        return call()

    if HISTORY is None:
        checked()
    else:
        HISTORY.around("use", checked, container.name, container.token, served=_served_at)


def _served_at(result: object) -> int | None:
    """The fake-mcp's "- Served at: <ms>" line in a navigate result."""
    match = re.search(r"- Served at: (\d+)", result if isinstance(result, str) else "")
    return int(match.group(1)) if match else None


@with_container(acquire_timeout_s=120)
def hold_briefly(seconds: float, *, container: ContainerLease) -> str:
    """Two uses of ``seconds / 2`` each: the lease protocol alone, no endpoint."""
    for _ in range(2):
        _use(container, lambda: time.sleep(seconds / 2))
    return container.token


@with_container(acquire_timeout_s=120)
def browse(pages: int, pause_s: float, *, container: ContainerLease) -> dict[str, object]:
    """Navigate ``pages`` pages on the leased fake-mcp endpoint, pausing between them."""
    with Browser(container, timeout_s=10) as browser:
        for page in range(pages):
            _use(container, lambda page=page: browser.navigate(f"data:text/html,page {page}"))  # type: ignore[misc]
            time.sleep(pause_s)
    return {"container": container.name, "token": container.token, "pages": pages}
