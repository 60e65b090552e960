"""Stopping background tasks within a bound.

A task that swallows its cancellation (a library that turns ``CancelledError`` into its own
error, caught by a loop that goes on) would keep a stopping process waiting for good. So a stop
cancels again until the task ends, and after ``within`` seconds it says which tasks are left, and
where they are, and lets them go.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Collection
from typing import Any

from loguru import logger

RECANCEL_EVERY_S = 0.2


async def stop(tasks: Collection[asyncio.Task[Any]], within: float) -> None:
    """Cancel ``tasks`` and wait for them, at most ``within`` seconds; report those still running."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pending = {task for task in tasks if not task.done()}
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=min(RECANCEL_EVERY_S, max(0.0, deadline - loop.time())))
    for task in pending:
        stack = io.StringIO()
        task.print_stack(file=stack)
        logger.warning("task {} did not stop within {:g} s; left running:\n{}", task.get_name(), within, stack.getvalue())
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            error = task.exception()
            logger.error("task {} ended with {}: {}", task.get_name(), type(error).__name__, error)
