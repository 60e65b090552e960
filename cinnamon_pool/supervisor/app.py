"""``cinnamon-pool supervise``: the supervisor daemon put together (Redis, Docker, the leader
election, its metrics and log files) and run until SIGTERM or SIGINT. Redis or Docker down at
start: it waits for each, one error per back-off, as the running loop would, so a supervisor
under ``restart: unless-stopped`` never crash-loops.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from typing import Any

import httpx
from loguru import logger
from tenacity import Retrying, retry_if_exception

from cinnamon_pool import backoff
from cinnamon_pool.clock import SYSTEM_CLOCK
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.connect import async_redis_client, describe, redis_client, unavailable
from cinnamon_pool.doctor import eviction_policy
from cinnamon_pool.door import door_for
from cinnamon_pool.errors import ImageMissing, RuntimeUnavailable, StoreError
from cinnamon_pool.gateway.prepare import Preparer
from cinnamon_pool.lease.gatewayside import GatewayStore
from cinnamon_pool.lease.reads import PoolReads
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.logs.actions import Details, LogAction
from cinnamon_pool.logs.events import action_record
from cinnamon_pool.logs.format import LogKind
from cinnamon_pool.logs.writer import DailyLogWriter
from cinnamon_pool.runtime.docker import DockerRuntime
from cinnamon_pool.supervisor.election import LeaderElection
from cinnamon_pool.supervisor.loop import Supervisor
from cinnamon_pool.supervisor.metrics import PoolMetrics


def run(config: PoolConfig) -> int:
    """Supervise this host's part of the pool until a signal; 2 when Redis may evict leases."""
    rules = config.rules
    client = redis_client(config.redis, pool=config.pool.name, socket_timeout=10)
    try:
        policy = waiting_for(f"Redis at {describe(config.redis)}", lambda e: unavailable(e, config.redis) is not None)(
            eviction_policy, PoolReads(client, config.pool.name)
        )
    except StoreError:
        policy = "noeviction"  # CONFIG not allowed (a managed Redis): `doctor` says to check by hand
    if policy != "noeviction":
        logger.critical(
            "refusing to start: Redis maxmemory-policy is {!r}, so it may evict lease keys and hand a container in use to a "
            "second job. Fix: CONFIG SET maxmemory-policy noeviction (and in redis.conf).",
            policy,
        )
        return 2
    runtime = waiting_for("the Docker daemon", docker_down)(DockerRuntime, host=config.pool.host)
    store = LeaseStore(
        client,
        config.pool.name,
        lease_ttl_s=rules.lease_ttl_s,
        max_lease_s=rules.max_lease_s,
        error_threshold=rules.error_threshold,
        host=runtime.host,
    )
    election = LeaderElection(
        store, lease_s=rules.leader_lease_s, renew_deadline_s=rules.leader_renew_deadline_s, retry_s=rules.leader_retry_s
    )
    metrics = PoolMetrics(config.pool.name)
    if config.metrics.port:
        try:
            metrics.serve(config.metrics.host, config.metrics.port)
            logger.info("metrics on http://{}:{}/metrics", config.metrics.host, config.metrics.port)
        except OSError as error:  # another supervisor on this host serves them (a standby, as a rule)
            logger.warning("no metrics endpoint on {}:{}: {}", config.metrics.host, config.metrics.port, error)
    door = door_for(config)
    supervisor = Supervisor(config, store, runtime, DailyLogWriter(config.logs.dir), election=election, metrics=metrics, door=door)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        logger.info("{}: finishing the tick; containers keep running", signal.Signals(signum).name)
        stop.set()
        supervisor.wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not config.gateway.enabled and config.gateway.prepare:
        keep_browsers_up(config, runtime.host, election, DailyLogWriter(config.logs.dir))
    logger.info(
        "pool {!r}, {} container(s) of {}, logs in {}/containers",
        config.pool.name,
        config.pool.initial_size,
        config.container.image,
        config.logs.dir,
    )
    supervisor.run(stop)
    return 0


def docker_down(error: BaseException) -> bool:
    """Docker does not answer (and is worth waiting for: a missing image is not)."""
    return isinstance(error, RuntimeUnavailable) and not isinstance(error, ImageMissing)


def waiting_for(what: str, down: Callable[[BaseException], bool]) -> Retrying:
    """A tenacity policy that retries a start-up call while ``what`` does not answer (``down``
    says which errors mean that), saying so once per back-off period (backoff.TICK_FAILED)."""
    return Retrying(
        retry=retry_if_exception(down),
        wait=backoff.TICK_FAILED,
        before_sleep=lambda state: logger.error(
            "{} does not answer: {}; trying again in {:g} s",
            what,
            state.outcome.exception() if state.outcome else "?",
            state.upcoming_sleep,
        ),
    )


def keep_browsers_up(config: PoolConfig, host: str, election: LeaderElection, writer: DailyLogWriter) -> None:
    """No gateway: hold a keeper session on each free container while this supervisor leads, so
    the browser stays up between jobs (see gateway/prepare.py). A thread with its own loop."""

    async def nothing_to_end(_name: str, _token: str) -> None:
        return None

    def report(container: str, action: LogAction, details: Details) -> None:
        writer.write(LogKind.ERRORS, action_record(SYSTEM_CLOCK.now(), container, action, details, "ERROR"))

    async def keep() -> None:
        timeout = httpx.Timeout(config.gateway.prepare_timeout_s, connect=config.gateway.connect_timeout_s)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            client = async_redis_client(config.redis, pool=config.pool.name, socket_timeout=10)
            store = GatewayStore(client, config.pool.name, host)
            preparer = Preparer(config, store, http, nothing_to_end, report, keep_only=True, active=lambda: election.leading)
            await preparer.run()

    threading.Thread(target=asyncio.run, args=(keep(),), name="cinnamon-keepers", daemon=True).start()
