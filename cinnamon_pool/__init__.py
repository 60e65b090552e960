"""cinnamon-pool: a pool of playwright-mcp containers lent to python-rq jobs, one job at a time.

from cinnamon_pool import with_container

@with_container()
def check_login(url, *, container):
    ...  # container.endpoint is the MCP URL of a container leased to this job alone

The names below are imported on first use, so ``import cinnamon_pool.supervisor.reconcile``
(or the CLI's ``status``) loads neither the MCP client nor rq.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cinnamon_pool.browser import Browser, mcp_session
    from cinnamon_pool.config import PoolConfig
    from cinnamon_pool.errors import (
        BrowserSessionEnded,
        CinnamonError,
        ConfigError,
        LeaseError,
        LeaseLost,
        LeaseNotOwned,
        PoolExhausted,
        RuntimeUnavailable,
    )
    from cinnamon_pool.job import with_container
    from cinnamon_pool.lease.handle import ContainerLease
    from cinnamon_pool.model import Outcome
    from cinnamon_pool.pool import ContainerPool

_EXPORTS = {
    "Browser": "cinnamon_pool.browser",
    "mcp_session": "cinnamon_pool.browser",
    "PoolConfig": "cinnamon_pool.config",
    "BrowserSessionEnded": "cinnamon_pool.errors",
    "CinnamonError": "cinnamon_pool.errors",
    "ConfigError": "cinnamon_pool.errors",
    "LeaseError": "cinnamon_pool.errors",
    "LeaseLost": "cinnamon_pool.errors",
    "LeaseNotOwned": "cinnamon_pool.errors",
    "PoolExhausted": "cinnamon_pool.errors",
    "RuntimeUnavailable": "cinnamon_pool.errors",
    "with_container": "cinnamon_pool.job",
    "ContainerLease": "cinnamon_pool.lease.handle",
    "Outcome": "cinnamon_pool.model",
    "ContainerPool": "cinnamon_pool.pool",
}

__all__ = [
    "Browser",
    "BrowserSessionEnded",
    "CinnamonError",
    "ConfigError",
    "ContainerLease",
    "ContainerPool",
    "LeaseError",
    "LeaseLost",
    "LeaseNotOwned",
    "Outcome",
    "PoolConfig",
    "PoolExhausted",
    "RuntimeUnavailable",
    "mcp_session",
    "with_container",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cinnamon_pool' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
