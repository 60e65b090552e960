"""Where Redis errors leave ``lease/``: as the project's own (errors.py), their cause attached.

Every public method of the sync store's parts is ``@translating``; the asyncio side awaits each
call through :func:`awaiting`. Nothing outside ``lease/`` and ``connect.py`` sees redis-py.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import ParamSpec, TypeVar, cast

import redis

from cinnamon_pool.errors import StoreError, StoreUnavailable

P = ParamSpec("P")
T = TypeVar("T")
WHERE = "the pool's Redis"  # the CLI names the URL (connect.unavailable); a daemon's log says this


def store_error(error: redis.RedisError) -> StoreError:
    """:class:`StoreUnavailable` when Redis did not answer (down, cut off, refusing the
    credentials), else :class:`StoreError` (a refused command: a read-only replica, a wrong type)."""
    detail = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, (redis.ConnectionError, redis.TimeoutError)):
        return StoreUnavailable(WHERE, detail)
    return StoreError(WHERE, detail)


def translating(method: Callable[P, T]) -> Callable[P, T]:
    if inspect.isgeneratorfunction(method):
        return cast(Callable[P, T], _translating_generator(method))

    @functools.wraps(method)
    def translated(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as error:
            raise store_error(error) from error

    return translated


def _translating_generator(method: Callable[P, Iterator[T]]) -> Callable[P, Iterator[T]]:
    @functools.wraps(method)
    def translated(*args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        try:
            yield from method(*args, **kwargs)
        except redis.RedisError as error:
            raise store_error(error) from error

    return translated


async def awaiting(call: Awaitable[T]) -> T:
    """``call``'s result; a Redis error leaves as the project's own."""
    try:
        return await call
    except redis.RedisError as error:
        raise store_error(error) from error
