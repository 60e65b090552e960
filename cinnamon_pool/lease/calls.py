"""What the lease scripts are called with and what they answer: ARGV built, replies read. Shared
by the sync store (store.py and its parts) and the asyncio client (aio.py)."""

from __future__ import annotations

import json
from typing import Any

from cinnamon_pool import decode, tokens
from cinnamon_pool.errors import LeaseLost, LeaseNotOwned
from cinnamon_pool.lease.handle import JobFigures
from cinnamon_pool.lease.scripts import Status
from cinnamon_pool.model import Grant, Holder, Outcome, validate_container_name

ERROR_CHARS = 500  # a failed job's error, as the errors log carries it


def acquire_request(holder: Holder, lease_ttl_s: float, max_lease_s: float, secret: str) -> str:
    """acquire.lua's ARGV[2]: who asks, for how long, and the digest of the secret that only the
    acquirer knows (shared by the sync and asyncio clients; see tokens.py)."""
    return json.dumps(
        {
            "test_run_id": holder.test_run_id,
            "job_id": holder.job_id,
            "worker": holder.worker,
            "artifacts": holder.artifacts,
            "ttl_ms": int(lease_ttl_s * 1000),
            "cap_ms": int(max_lease_s * 1000),
            "random": tokens.secret_digest(secret),
        }
    )


def release_args(
    name: str,
    token: str,
    outcome: Outcome,
    error_threshold: int,
    recycle: bool = False,
    cleanup_ms: float | None = None,
    cleanup_note: str = "",
    artifacts: str = "",
    error: str = "",
    context: str = "",
    figures: JobFigures | None = None,
    trace: str = "",
) -> list[str | int]:
    """release.lua's ARGV (shared by the sync and asyncio clients)."""
    return [
        validate_container_name(name),
        tokens.fingerprint(token),
        Outcome(outcome).value,
        error_threshold,
        "recycle" if recycle else "",
        "" if cleanup_ms is None else f"{cleanup_ms:.1f}",
        cleanup_note[:500],
        artifacts[:500],
        error[:ERROR_CHARS],
        context[:100],
        *figures_args(figures or JobFigures()),
        trace[:500],
    ]


def figures_args(figures: JobFigures) -> list[str | int]:
    """The job's figures as release.lua's ARGV[11..14] ('' for a latency without calls)."""

    def ms(seconds: float | None) -> str:
        return "" if seconds is None else f"{seconds * 1000:.1f}"

    return [figures.tool_calls, ms(figures.tool_p50_s), ms(figures.tool_max_s), figures.console_errors]


def claimed(raw: object, secret: str) -> Grant:
    """A grant from a script's reply or a wake list, with the token that ``secret`` makes of its
    fingerprint; :class:`InvalidIdentifier` when it was not made for that secret."""
    return decode.grant(raw, lambda fingerprint: tokens.claim(fingerprint, secret))


def text(value: Any) -> Any:
    """A script's reply item as text. Replies can carry a member name read from Redis (reap's
    expired names), which need not be UTF-8: it comes back escaped, never as an exception."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def counts_of(raw: Any) -> dict[str, int]:
    """The counts a script reports with WAIT or EXHAUSTED (our own reply, decoded all the same)."""
    try:
        data = decode.json_object(raw, "counts")
        return {str(k): decode.integer(v, k) for k, v in data.items()}
    except decode.BadValue:
        return {}


def raise_rejection(name: str, reply: list[Any]) -> None:
    status = Status(reply[0])
    if status is Status.LOST:
        raise LeaseLost(name, str(reply[1]))
    if status is Status.NOT_OWNER:
        raise LeaseNotOwned(name, str(reply[1]))
