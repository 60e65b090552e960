"""The supervisor against the real engine: a supervisor thread on a pool of fake-mcp containers
(the fixtures ``start`` and ``running`` in conftest.py), and what its tests read back."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.logs.format import parse
from cinnamon_pool.supervisor.loop import Supervisor


def eventually(condition: Callable[[], object], seconds: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"{what} did not hold within {seconds} s")


class Running:
    def __init__(self, supervisor: Supervisor, store: LeaseStore, logs: Path) -> None:
        self.supervisor, self.store, self.logs = supervisor, store, logs

    def free(self) -> list[str]:
        return sorted(self.store.snapshot().free)

    def supervisor_errors(self) -> list[str]:
        files = sorted((self.logs / "containers").glob("container-errors-*.log"))
        return [r.detail("Error") for f in files for r in parse(f.open()) if r.action == "ERROR_OCCURRED"]

    def actions(self, kind: str) -> list[str]:
        return [r.action for f in sorted((self.logs / "containers").glob(f"container-{kind}-*.log")) for r in parse(f.open())]


Starter = Callable[..., Running]


def pool_log(running: Running, action: str) -> list[str]:
    files = sorted((running.logs / "containers").glob("container-*.log"))
    return [r.detail("Reason") for f in files for r in parse(f.open()) if r.action == action]


def fake(endpoint: str, change: dict[str, object]) -> None:
    httpx.post(endpoint.removesuffix("/mcp") + "/_fake/mode", json=change, timeout=10).raise_for_status()
