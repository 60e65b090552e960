"""``cinnamon-pool dashboard``: the dashboard put together (its Redis client for API keys, the
guard in front of it) and served by uvicorn until SIGTERM or SIGINT."""

from __future__ import annotations

import sys

import uvicorn

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.connect import async_redis_client
from cinnamon_pool.dashboard.app import Dashboard, Guard, check_exposure
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.apikeys import look_up


def run(config: PoolConfig) -> int:
    """Serve the dashboard on ``dashboard.listen`` until a signal."""
    check_exposure(config)
    dashboard = Dashboard(config)
    client, keys = async_redis_client(config.redis, pool=config.pool.name, socket_timeout=5), PoolKeys(config.pool.name)

    async def key_valid(key: str) -> bool:
        return await look_up(client, keys, key) is not None

    settings = config.dashboard
    host, _, port = settings.listen.rpartition(":")
    scheme = "https" if settings.tls_cert else "http"
    viewer = (
        f"trace viewer {dashboard.viewer}"
        if dashboard.viewer
        else "no trace viewer found: set dashboard.trace_viewer (make images installs one)"
    )
    print(f"cinnamon-pool dashboard: pool {config.pool.name!r} on {scheme}://{settings.listen}/ ({viewer})", file=sys.stderr, flush=True)
    uvicorn.run(
        Guard(dashboard.app(), config, key_valid),
        host=host.strip("[]"),
        port=int(port),
        ssl_certfile=settings.tls_cert or None,
        ssl_keyfile=settings.tls_key or None,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    return 0
