"""Pool configuration: a frozen dataclass per TOML table, validated loudly.

``load.py`` reads a TOML file (``--config PATH`` or ``CINNAMON_CONFIG``) and the ``CINNAMON_*``
variables, the environment winning over the file; ``container.py`` is the [container] table,
``sections.py`` the others, each checking its own values. Unknown keys and bad values raise
:class:`ConfigError` naming the key (``pool.min_size``) or variable and the value.
"""

# the names users and the package import from cinnamon_pool.config (explicit re-exports)
from cinnamon_pool.config.container import DEFAULT_COMMAND as DEFAULT_COMMAND
from cinnamon_pool.config.container import OUTPUT_DIR as OUTPUT_DIR
from cinnamon_pool.config.container import PLAYWRIGHT_IDLE_TIMEOUT_S as PLAYWRIGHT_IDLE_TIMEOUT_S
from cinnamon_pool.config.container import ContainerTemplate as ContainerTemplate
from cinnamon_pool.config.container import idle_timeout_s as idle_timeout_s
from cinnamon_pool.config.container import parse_memory as parse_memory
from cinnamon_pool.config.load import ENV_VARIABLES as ENV_VARIABLES
from cinnamon_pool.config.load import PoolConfig as PoolConfig
from cinnamon_pool.config.sections import DashboardSettings as DashboardSettings
from cinnamon_pool.config.sections import GatewaySettings as GatewaySettings
from cinnamon_pool.config.sections import LogSettings as LogSettings
from cinnamon_pool.config.sections import MetricsSettings as MetricsSettings
from cinnamon_pool.config.sections import PoolSettings as PoolSettings
from cinnamon_pool.config.sections import RedisSettings as RedisSettings
from cinnamon_pool.config.sections import Rules as Rules
from cinnamon_pool.config.sections import WorkerSettings as WorkerSettings
from cinnamon_pool.config.sections import redact as redact
