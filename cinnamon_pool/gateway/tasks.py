"""Stopping background tasks within a bound.

A task that swallows its cancellation (a library that turns ``CancelledError`` into its own
error, caught by a loop that goes on) would keep a stopping process waiting for good. So a stop
cancels again until the task ends, and after ``within`` seconds it says which tasks are left, and
where they are, and lets them go.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Collection
from typing import Any

RECANCEL_EVERY_S = 0.2


async def stop(tasks: Collection[asyncio.Task[Any]], within: float, what: str) -> None:
    """Cancel ``tasks`` and wait for them, at most ``within`` seconds; report those still running."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pending = {task for task in tasks if not task.done()}
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=min(RECANCEL_EVERY_S, max(0.0, deadline - loop.time())))
    for task in pending:
        print(f"cinnamon-pool {what}: task {task.get_name()} did not stop within {within:g} s; left running:", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            error = task.exception()
            print(f"cinnamon-pool {what}: task {task.get_name()} ended with {type(error).__name__}: {error}", file=sys.stderr)
