"""Tool-call latency and errors per container, measured where the calls pass: the gateway.

A ``tools/call`` request is timed from its forwarding to the end of its answer (with
streamable HTTP the answer may come as an SSE stream: the head alone says nothing), and is an
error when the container answers HTTP >= 400, the answer breaks, the result says
``"isError": true``, or the answer is a JSON-RPC error. Prometheus gets a histogram and a counter per container; Redis gets the
newest calls' figures per container (``cinnamon:{P}:tool_calls``, every few seconds) for
``cinnamon-pool status``.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TOOL_CALL = re.compile(rb'"method"\s*:\s*"tools/call"')
IS_ERROR = re.compile(rb'"isError"\s*:\s*true|"error"\s*:\s*\{\s*"code"')  # a failed tool, or a JSON-RPC error
RECENT = 200  # calls per container behind the figures published to Redis


def is_tool_call(body: bytes) -> bool:
    return bool(TOOL_CALL.search(body))


def reports_error(chunk: bytes) -> bool:
    return bool(IS_ERROR.search(chunk))


@dataclass
class ToolCalls:
    """The newest calls per container: (seconds, failed)."""

    recent: dict[str, deque[tuple[float, bool]]] = field(default_factory=dict)

    def add(self, container: str, seconds: float, failed: bool) -> None:
        self.recent.setdefault(container, deque(maxlen=RECENT)).append((seconds, failed))

    def figures(self, now_ms: int) -> dict[str, str]:
        """Per container, the JSON that goes to Redis: calls, errors, p50/p95 ms, when."""
        published = {}
        for container, calls in self.recent.items():
            latencies = sorted(seconds for seconds, _failed in calls)
            published[container] = json.dumps(
                {
                    "calls": len(calls),
                    "errors": sum(1 for _seconds, failed in calls if failed),
                    "p50_ms": round(_at(latencies, 0.50) * 1000, 1),
                    "p95_ms": round(_at(latencies, 0.95) * 1000, 1),
                    "at_ms": now_ms,
                }
            )
        return published


def _at(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def summary(raw: Mapping[Any, Any], names: Iterable[str]) -> dict[str, dict[str, float | int]]:
    """The published figures, read back for ``status`` (a value that is not ours is skipped)."""
    wanted, found = set(names), {}
    for key, value in raw.items():
        name = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
        if name not in wanted:
            continue
        try:
            data = json.loads(value)
            calls, errors = int(data["calls"]), int(data["errors"])
            p50, p95 = float(data["p50_ms"]), float(data["p95_ms"])
        except (ValueError, TypeError, KeyError):
            continue
        if calls <= 0 or not 0 <= errors <= calls or p50 < 0 or p95 < 0:
            continue
        found[name] = {"calls": calls, "errors": errors, "p50_ms": p50, "p95_ms": p95}
    return found
