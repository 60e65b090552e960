"""cinnamon-pool: a pool of playwright-mcp containers lent to python-rq jobs, one job at a time.

from cinnamon_pool import with_container

@with_container()
def check_login(url, *, container):
    ...  # container.endpoint is the MCP URL of a container leased to this job alone
"""

from cinnamon_pool.browser import Browser, mcp_session
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.errors import (
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

__all__ = [
    "Browser",
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
