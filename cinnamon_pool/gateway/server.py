"""``cinnamon-pool gateway``: this host's gateway put together (the async Redis client, the
application, the log writer, the door) and served by uvicorn with the connection limits of
gateway/protocol.py until SIGTERM or SIGINT.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
from pathlib import Path
from typing import Any

import uvicorn

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.connect import async_redis_client
from cinnamon_pool.door import door_for
from cinnamon_pool.errors import ConfigError
from cinnamon_pool.gateway.app import Gateway
from cinnamon_pool.gateway.protocol import uvicorn_options
from cinnamon_pool.lease.gatewayside import GatewayStore
from cinnamon_pool.logs.writer import DailyLogWriter
from cinnamon_pool.runtime.docker import DockerRuntime
from cinnamon_pool.supervisor.app import docker_down, waiting_for

GRACEFUL_SHUTDOWN_S = 10  # a stopping gateway waits this long for open requests and streams, then cuts them
# longer than any client's own (httpx: 5 s), so the client, not the server, closes an idle
# connection: the two closing at once would race (see door.js)
KEEP_ALIVE_S = 75


class Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: Any) -> None:
        # Open streams are cut after GRACEFUL_SHUTDOWN_S; a shutdown stuck past that says where
        # (every thread's stack on stderr) and exits, so a stop never hangs. Armed by the first
        # signal only: a second one must not put the exit off.
        if not self.should_exit:
            faulthandler.dump_traceback_later(GRACEFUL_SHUTDOWN_S + 5, exit=True)
        super().handle_exit(sig, frame)


def run(config: PoolConfig) -> int:
    """Serve this host's gateway until a signal."""
    settings = config.gateway
    if not settings.enabled:
        raise ConfigError("gateway.listen", settings.listen, "is empty: this configuration has no gateway (jobs reach containers directly)")
    for key in ("tls_cert", "tls_key"):
        path = getattr(settings, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"gateway.{key}", path, "file not found")
    # the name the supervisor gives this host's records (Docker down at start: wait, as supervise does)
    host = config.pool.host or waiting_for("the Docker daemon", docker_down)(DockerRuntime).host
    # Every waiting session holds a connection in BLPOP, and each request in flight may need one:
    # redis-py's own cap (100 since 8.x) would leave waiters out of the queue and requests stalled.
    connections = settings.max_connections + settings.max_waiting_sessions + 16
    client = async_redis_client(config.redis, pool=config.pool.name, socket_timeout=5, max_connections=connections)
    gateway = Gateway(config, GatewayStore(client, config.pool.name, host), DailyLogWriter(config.logs.dir), door=door_for(config))
    bind, port = settings.host_port
    print(
        f"cinnamon-pool gateway: pool {config.pool.name!r}, host {host!r}, listening on {bind}:{port}; "
        f"jobs get {settings.endpoint(config.pool.name, 'container-001')} ...",
        file=sys.stderr,
        flush=True,
    )
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: every thread's stack on stderr
    server = Server(
        uvicorn.Config(
            gateway.app(),
            host=bind,
            port=port,
            ssl_certfile=settings.tls_cert or None,
            ssl_keyfile=settings.tls_key or None,
            limit_concurrency=settings.max_connections,
            timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            access_log=False,
            log_level="warning",
            lifespan="on",
            **uvicorn_options(settings.header_timeout_s, settings.max_connections_per_client, gateway.connection_refused),
        )
    )
    server.run()
    return 0
