"""The decorator's surface and the outcome attribution, without Redis."""

from __future__ import annotations

import inspect

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from cinnamon_pool import BrowserSessionEnded, ContainerLease, LeaseLost, Outcome, decode, with_container
from cinnamon_pool.browser import ToolError
from cinnamon_pool.job import acquire_wait_s
from cinnamon_pool.logs.events import event_record
from cinnamon_pool.pool import classify


@with_container(acquire_timeout_s=1)
def documented_job(url: str, *, container: ContainerLease, test_run_id: str | None = None) -> str:
    """Open url."""
    return url


def test_the_decorator_keeps_name_docstring_and_signature() -> None:
    assert documented_job.__name__ == "documented_job"
    assert documented_job.__doc__ == "Open url."
    assert list(inspect.signature(documented_job).parameters) == ["url", "container", "test_run_id"]


def test_passing_container_yourself_is_an_error() -> None:
    with pytest.raises(TypeError, match="'container', which @with_container injects"):
        documented_job("x", container=object())  # type: ignore[arg-type]


def test_bad_options_name_the_value() -> None:
    with pytest.raises(ValueError, match="on_exhausted='retry'"):
        with_container(on_exhausted="retry")


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (AssertionError("expected 'Welcome'"), Outcome.TEST_FAILED),
        (ToolError("browser_click", "Ref e9 not found in the current page snapshot"), Outcome.TEST_FAILED),
        (ToolError("browser_navigate", "Target page, context or browser has been closed"), Outcome.INFRA_ERROR),
        (ToolError("browser_snapshot", "Page crashed"), Outcome.INFRA_ERROR),
        (httpx.ConnectError("connection refused"), Outcome.INFRA_ERROR),
        (TimeoutError(), Outcome.INFRA_ERROR),
        (LeaseLost("container-001", "expired"), Outcome.INFRA_ERROR),
        (BrowserSessionEnded("container-001", "RemoteProtocolError: Server disconnected"), Outcome.INFRA_ERROR),
        (ExceptionGroup("task group", [ValueError("x"), httpx.ReadTimeout("slow")]), Outcome.INFRA_ERROR),
        (RuntimeError("wrapped"), Outcome.TEST_FAILED),
    ],
)
def test_only_failures_of_the_container_count_against_it(error: BaseException, outcome: Outcome) -> None:
    assert classify(error) is outcome


def test_mcp_protocol_errors_are_infra_errors() -> None:
    assert classify(MCPError(-32603, "boom")) is Outcome.INFRA_ERROR


def test_a_release_with_cleanup_and_artifacts_becomes_three_records() -> None:
    fields = {
        "kind": "released", "name": "container-001", "at_ms": "1736346615000", "token": "t", "test_run_id": "run-7", "outcome": "test_failed",
        "duration_ms": "2500", "error_count": "0", "threshold": "3", "cleanup_ms": "31.5", "cleanup_note": "canary clean in 1.20s",
        "artifacts": "logs/artifacts/2025-01-08/run-7",
    }  # fmt: skip
    records = event_record(decode.event("1-0", fields), {"container-001": 182.0}, 3)
    actions = [(kind.value, record.action) for kind, record in records]
    assert actions == [("usage", "RELEASED"), ("usage", "CLEANUP_COMPLETED"), ("errors", "ERROR_OCCURRED")]
    cleanup, error = records[1][1], records[2][1]
    assert cleanup.detail("Cleanup Duration") == "0.03s" and cleanup.detail("Memory After Cleanup") == "182MB", "no reading after: the last"
    assert error.detail("Artifacts") == "logs/artifacts/2025-01-08/run-7" and error.detail("Error Type") == "test_failed"


@with_container
def bare_job(url: str, *, container: ContainerLease) -> str:
    """Open url, bare."""
    return url


def test_the_bare_decorator_wraps_the_function_as_the_called_one_does() -> None:
    assert bare_job.__name__ == "bare_job" and bare_job.__doc__ == "Open url, bare."
    assert list(inspect.signature(bare_job).parameters) == ["url", "container"]
    with pytest.raises(TypeError, match="'container', which @with_container injects"):
        bare_job("x", container=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pass a PoolConfig"):
        with_container("default")  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("asked", "job_timeout", "waits"),
    [(300.0, 180, 90.0), (300.0, 900, 300.0), (30.0, 180, 30.0), (300.0, None, 300.0), (300.0, -1, 300.0)],
)
def test_the_acquire_wait_takes_at_most_half_the_jobs_rq_timeout(asked: float, job_timeout: int | None, waits: float) -> None:
    assert acquire_wait_s(asked, job_timeout) == waits
