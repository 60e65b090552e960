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
import logging
import socket
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

from rq import Callback, Queue, Retry, get_current_job

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.errors import PoolExhausted
from cinnamon_pool.model import ARTIFACTS
from cinnamon_pool.pool import ContainerPool

P = ParamSpec("P")
R = TypeVar("R")


def _log() -> logging.Logger:
    """Job-side messages go through the standard library: to the ``cinnamon_pool`` logger when
    the application configured logging, else to rq's worker log (``rq.worker.cinnamon_pool``),
    so `rq worker --logging_level` and `--quiet` govern them."""
    own = logging.getLogger("cinnamon_pool")
    return own if own.hasHandlers() else logging.getLogger("rq.worker").getChild("cinnamon_pool")


DEFAULT_ACQUIRE_TIMEOUT_S = 300.0
JOB_SHARE_OF_TIMEOUT = 0.5  # of an rq job's timeout, the acquire wait may take at most this share


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
    """A copy of ``job`` on its queue in ``delay_s``: the same function, arguments, timeout, TTLs,
    meta, retries left, callbacks and dependencies (the copy's meta names the job it replaces)."""
    queue = Queue(job.origin, connection=job.connection, serializer=job.serializer)
    retry = Retry(max=job.retries_left, interval=job.retry_intervals or 0) if job.retries_left else None
    again = queue.enqueue_at(
        datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=delay_s),
        job.func_name,
        args=job.args,
        kwargs=job.kwargs,
        job_timeout=job.timeout,
        description=job.description,
        result_ttl=job.result_ttl,
        ttl=job.ttl,
        failure_ttl=job.failure_ttl,
        # the ids stored with the job: rq empties the set behind ``dependency_ids`` once they are met
        depends_on=list(getattr(job, "_dependency_ids", None) or job.dependency_ids) or None,
        meta={**job.meta, "cinnamon_requeued_from": job.id},
        retry=retry,
        on_success=_callback(job, "success"),
        on_failure=_callback(job, "failure"),
        on_stopped=_callback(job, "stopped"),
    )
    _log().info("cinnamon-pool: pool exhausted; job %s requeued as %s in %.0f s", job.id, again.id, delay_s)
    return {"requeued_as": again.id}


def _callback(job: Any, kind: str) -> Callback | None:
    name = getattr(job, f"_{kind}_callback_name", None)
    return Callback(name, getattr(job, f"_{kind}_callback_timeout", None)) if name else None


def _warn_about_timeout(job: Any, config: PoolConfig) -> None:
    """A job allowed to run longer than the lease hard cap would lose its container mid-run."""
    timeout = getattr(job, "timeout", None)
    if timeout is not None and timeout >= config.rules.max_lease_s:
        _log().warning(
            "cinnamon-pool: job %s has timeout %s s, not below the lease hard cap rules.max_lease_s=%s s: "
            "its lease ends before rq stops it",
            job.id,
            timeout,
            config.rules.max_lease_s,
        )


def acquire_wait_s(acquire_timeout_s: float, job_timeout_s: float | None) -> float:
    """How long a job may wait for a container: ``acquire_timeout_s``, but never more than half
    the job's rq timeout, so rq does not kill a waiting job before ``PoolExhausted`` (or the
    requeue) can happen, and the job keeps the other half to run."""
    if job_timeout_s is None or job_timeout_s <= 0:
        return acquire_timeout_s
    return min(acquire_timeout_s, job_timeout_s * JOB_SHARE_OF_TIMEOUT)


_CAPPED_SAID: set[tuple[str, float, float]] = set()


def _say_capped_once(function: str, asked_s: float, capped_s: float, job_timeout_s: float) -> None:
    if capped_s < asked_s and (function, asked_s, job_timeout_s) not in _CAPPED_SAID:
        _CAPPED_SAID.add((function, asked_s, job_timeout_s))
        _log().warning(
            "cinnamon-pool: %s waits at most %.0f s for a container, not acquire_timeout_s=%.0f s: "
            "half of its rq job timeout (%.0f s), so rq does not kill it while it waits",
            function,
            capped_s,
            asked_s,
            job_timeout_s,
        )


def _current_job() -> Any:
    return get_current_job()


@overload
def with_container(config: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def with_container(
    config: PoolConfig | None = None,
    *,
    acquire_timeout_s: float = DEFAULT_ACQUIRE_TIMEOUT_S,
    on_exhausted: str = "fail",
    requeue_delay_s: float = 30.0,
    artifacts: str = "failure",
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def with_container(
    config: PoolConfig | Callable[..., Any] | None = None,
    *,
    acquire_timeout_s: float = DEFAULT_ACQUIRE_TIMEOUT_S,
    on_exhausted: str = "fail",
    requeue_delay_s: float = 30.0,
    artifacts: str = "failure",
) -> Any:
    """Inject ``container=`` (a :class:`ContainerLease`) into an rq job function.

    Written bare (``@with_container``) or called (``@with_container()``, with the options
    below), it does the same. ``config`` defaults to the same configuration the CLI reads
    (``CINNAMON_CONFIG`` and the ``CINNAMON_*`` variables), read when the job runs. The test run
    id is the job's ``test_run_id`` keyword when given (it is still passed on to the function),
    else the rq job id.

    The job waits for a container up to ``acquire_timeout_s``, and never longer than half its
    rq job timeout (said once per function in the worker's log when that shortens the wait).
    When no container frees up by then:

    - ``on_exhausted="fail"`` (default): the job fails with :class:`PoolExhausted`, whose
      message carries the pool's counts;
    - ``on_exhausted="requeue"``: the job puts a copy of itself back on its queue to run in
      ``requeue_delay_s`` and ends, so the worker is not held idle (the worker needs rq's
      scheduler: ``rq worker --with-scheduler``). The copy keeps the job's arguments, timeout,
      TTLs, meta, retries left, callbacks and dependencies. It returns ``{"requeued_as": <job id>}``.

    ``artifacts``: when the job's last snapshot, a screenshot and the console log are saved to
    ``<logs.dir>/artifacts/<date>/<test run id>/`` (by the project's ``Browser``): ``"failure"``
    (default), ``"always"`` or ``"never"``. A failed job's traceback is saved unless ``"never"``.
    """
    if callable(config) and not isinstance(config, PoolConfig):
        return with_container()(config)
    if on_exhausted not in {"fail", "requeue"}:
        raise ValueError(f"on_exhausted={on_exhausted!r}: use 'fail' or 'requeue'")
    if artifacts not in ARTIFACTS:
        raise ValueError(f"artifacts={artifacts!r}: use one of {', '.join(ARTIFACTS)}")
    if acquire_timeout_s < 0 or requeue_delay_s < 0:
        raise ValueError(f"acquire_timeout_s={acquire_timeout_s!r}, requeue_delay_s={requeue_delay_s!r}: must be >= 0")
    if config is not None and not isinstance(config, PoolConfig):
        raise TypeError(f"with_container(config={config!r}): pass a PoolConfig, or nothing to read CINNAMON_CONFIG")
    fixed_config = config

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def run_with_container(*args: P.args, **kwargs: P.kwargs) -> R:
            if "container" in kwargs:
                raise TypeError(f"{function.__name__}() was given 'container', which @with_container injects")
            pool = _pool_for(fixed_config or PoolConfig.from_environment())
            job = _current_job()
            job_id = str(job.id) if job is not None else ""
            worker = str(getattr(job, "worker_name", None) or socket.gethostname())
            test_run_id = str(kwargs.get("test_run_id") or job_id) or None
            _warn_about_timeout(job, pool.config)
            job_timeout = getattr(job, "timeout", None)
            wait_s = acquire_wait_s(acquire_timeout_s, job_timeout)
            if job_timeout is not None:
                _say_capped_once(function.__qualname__, acquire_timeout_s, wait_s, job_timeout)
            with contextlib.ExitStack() as stack:
                try:
                    lease = stack.enter_context(
                        pool.lease(test_run_id, job_id=job_id, worker=worker, timeout_s=wait_s, artifacts=artifacts)
                    )
                except PoolExhausted:
                    if on_exhausted == "requeue" and job is not None:
                        return _requeue(job, requeue_delay_s)  # type: ignore[return-value]
                    raise
                return function(*args, container=lease, **kwargs)  # type: ignore[arg-type]

        return run_with_container

    return decorate
