"""``@with_container``: lend a pool container to an rq job for exactly one call.

Inside the process that runs the job (rq's work horse): acquire a lease (waiting in the fair
queue when none is free), renew it from a heartbeat thread, call the job with
``container=<ContainerLease>``, then release it with the outcome (see
:func:`cinnamon_pool.pool.classify`). It never talks to Docker. Exceptions are re-raised, so
rq records the failure as usual.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import socket
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from loguru import logger
from rq import Queue, get_current_job

from cinnamon_pool.config import ENV_VARIABLES, PoolConfig
from cinnamon_pool.errors import PoolExhausted
from cinnamon_pool.lease.handle import ARTIFACTS
from cinnamon_pool.pool import ContainerPool

P = ParamSpec("P")
R = TypeVar("R")


_CONFIG_VARIABLES = ("CINNAMON_CONFIG", *ENV_VARIABLES)


def _config_from_environment() -> PoolConfig:
    """The CLI's configuration, parsed again only when the file or a CINNAMON_* variable changed."""
    variables = tuple((k, os.environ[k]) for k in _CONFIG_VARIABLES if k in os.environ)
    path = os.environ.get("CINNAMON_CONFIG")
    try:
        stamp = os.stat(path).st_mtime_ns if path else 0
    except OSError:
        stamp = -1  # let load() report the missing file
    return _parsed_config(variables, stamp)


@functools.lru_cache(maxsize=8)
def _parsed_config(variables: tuple[tuple[str, str], ...], stamp: int) -> PoolConfig:
    return PoolConfig.load(environ=dict(variables))


def _pool_for(config: PoolConfig) -> ContainerPool:
    rules = config.rules
    key = (config.redis, config.pool.name, rules.lease_ttl_s, rules.max_lease_s, rules.error_threshold)
    pool = _POOLS.get(key)
    if pool is None:
        # One pool (and Redis connection pool) per configuration per process; redis-py opens
        # new connections after a fork, so rq's work horses share no socket with their parent.
        pool = _POOLS[key] = ContainerPool(config)
    return pool


_POOLS: dict[tuple[Any, ...], ContainerPool] = {}


def _requeue(job: Any, delay_s: float) -> dict[str, str]:
    queue = Queue(job.origin, connection=job.connection, serializer=job.serializer)
    again = queue.enqueue_in(
        datetime.timedelta(seconds=delay_s), job.func_name, *job.args, job_timeout=job.timeout, description=job.description, **job.kwargs
    )
    logger.info("cinnamon-pool: pool exhausted; job {} requeued as {} in {:.0f} s", job.id, again.id, delay_s)
    return {"requeued_as": again.id}


def _warn_about_timeout(job: Any, config: PoolConfig) -> None:
    """A job allowed to run longer than the lease hard cap would lose its container mid-run."""
    timeout = getattr(job, "timeout", None)
    if timeout is not None and timeout >= config.rules.max_lease_s:
        logger.warning(
            "cinnamon-pool: job {} has timeout {} s, not below the lease hard cap rules.max_lease_s={} s: "
            "its lease ends before rq stops it",
            job.id,
            timeout,
            config.rules.max_lease_s,
        )


def _current_job() -> Any:
    return get_current_job()


def with_container(
    config: PoolConfig | None = None,
    *,
    acquire_timeout_s: float = 300.0,
    on_exhausted: str = "fail",
    requeue_delay_s: float = 30.0,
    artifacts: str = "failure",
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Inject ``container=`` (a :class:`ContainerLease`) into an rq job function.

    ``config`` defaults to the same configuration the CLI reads (``CINNAMON_CONFIG`` and the
    ``CINNAMON_*`` variables), read when the job runs. The test run id is the job's
    ``test_run_id`` keyword when given (it is still passed on to the function), else the rq
    job id. When no container frees up within ``acquire_timeout_s``:

    - ``on_exhausted="fail"`` (default): the job fails with :class:`PoolExhausted`, whose
      message carries the pool's counts;
    - ``on_exhausted="requeue"``: the job puts a copy of itself back on its queue to run in
      ``requeue_delay_s`` and ends, so the worker is not held idle (the worker needs rq's
      scheduler: ``rq worker --with-scheduler``). It returns ``{"requeued_as": <job id>}``.

    ``artifacts``: when the job's last snapshot, a screenshot and the console log are saved to
    ``<logs.dir>/artifacts/<date>/<test run id>/`` (by the project's ``Browser``): ``"failure"``
    (default), ``"always"`` or ``"never"``. A failed job's traceback is saved unless ``"never"``.
    """
    if on_exhausted not in {"fail", "requeue"}:
        raise ValueError(f"on_exhausted={on_exhausted!r}: use 'fail' or 'requeue'")
    if artifacts not in ARTIFACTS:
        raise ValueError(f"artifacts={artifacts!r}: use one of {', '.join(ARTIFACTS)}")
    if acquire_timeout_s < 0 or requeue_delay_s < 0:
        raise ValueError(f"acquire_timeout_s={acquire_timeout_s!r}, requeue_delay_s={requeue_delay_s!r}: must be >= 0")

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def run_with_container(*args: P.args, **kwargs: P.kwargs) -> R:
            if "container" in kwargs:
                raise TypeError(f"{function.__name__}() was given 'container', which @with_container injects")
            pool = _pool_for(config or _config_from_environment())
            job = _current_job()
            job_id = str(job.id) if job is not None else ""
            worker = str(getattr(job, "worker_name", None) or socket.gethostname())
            test_run_id = str(kwargs.get("test_run_id") or job_id) or None
            _warn_about_timeout(job, pool.config)
            with contextlib.ExitStack() as stack:
                try:
                    lease = stack.enter_context(
                        pool.lease(test_run_id, job_id=job_id, worker=worker, timeout_s=acquire_timeout_s, artifacts=artifacts)
                    )
                except PoolExhausted:
                    if on_exhausted == "requeue" and job is not None:
                        return _requeue(job, requeue_delay_s)  # type: ignore[return-value]
                    raise
                return function(*args, container=lease, **kwargs)  # type: ignore[arg-type]

        return run_with_container

    return decorate
