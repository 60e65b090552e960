"""The pool's vocabulary: container states, release outcomes, records, and identifier checks.

Every identifier that reaches a Redis key, a Docker call, a label or a log line passes one of
the ``validate_*`` functions first; they raise :class:`InvalidIdentifier` naming the value.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass
from typing import Any

from cinnamon_pool.errors import InvalidIdentifier


class ContainerState(enum.StrEnum):
    STARTING = "starting"  # created, not yet ready
    AVAILABLE = "available"  # ready, in the free set
    ALLOCATED = "allocated"  # leased to a job
    DRAINING = "draining"  # leased, restart when released
    RESTARTING = "restarting"  # must be recycled before it serves again
    UNHEALTHY = "unhealthy"  # failed probes, to be replaced


class Outcome(enum.StrEnum):
    """What a job reports when it releases: only ``infra_error`` counts against the container."""

    OK = "ok"
    TEST_FAILED = "test_failed"
    INFRA_ERROR = "infra_error"


_POOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_CONTAINER_NAME = re.compile(r"container-\d{3,6}")
_TEST_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}")
_DOCKER_ID = re.compile(r"[0-9a-f]{64}")
_TOKEN = re.compile(r"[0-9a-f]{16}:\d{1,19}:[0-9a-f]{16}")
_TICKET = re.compile(r"[0-9a-f]{32}")
_HOST = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


def _check(kind: str, value: object, pattern: re.Pattern[str], rule: str) -> str:
    if not isinstance(value, str):
        raise InvalidIdentifier(kind, value, "must be a string")
    if not value:
        raise InvalidIdentifier(kind, value, "must not be empty")
    if not pattern.fullmatch(value):
        raise InvalidIdentifier(kind, value, rule)
    if ".." in value:
        raise InvalidIdentifier(kind, value, "must not contain '..'")
    return value


def validate_pool_name(value: object) -> str:
    return _check("pool name", value, _POOL_NAME, "1-63 of A-Z a-z 0-9 _ . - starting with a letter or digit")


def validate_container_name(value: object) -> str:
    return _check("container name", value, _CONTAINER_NAME, "must look like container-001")


def validate_test_run_id(value: object) -> str:
    return _check("test run id", value, _TEST_RUN_ID, "1-128 of A-Z a-z 0-9 _ . : @ + - starting with a letter or digit")


def validate_docker_id(value: object) -> str:
    return _check("docker container id", value, _DOCKER_ID, "must be 64 lowercase hex digits")


def validate_token(value: object) -> str:
    return _check("fencing token", value, _TOKEN, "must look like epoch:generation:random")


def validate_ticket(value: object) -> str:
    return _check("waiter ticket", value, _TICKET, "must be 32 lowercase hex digits")


def validate_host(value: object) -> str:
    return _check("docker host name", value, _HOST, "1-128 of A-Z a-z 0-9 _ . -")


def container_name(slot: int) -> str:
    return validate_container_name(f"container-{slot:03d}")


@dataclass(frozen=True)
class ContainerRecord:
    """A container as the lease store knows it (the supervisor writes, everyone reads)."""

    name: str
    container_id: str
    slot: int
    host: str
    endpoint: str
    state: ContainerState
    error_count: int = 0
    restarts: int = 0
    memory_mb: float | None = None
    started_at: float = 0.0

    def to_json_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "state": self.state.value}

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> ContainerRecord:
        return cls(
            name=validate_container_name(data["name"]),
            container_id=validate_docker_id(data["container_id"]),
            slot=int(data["slot"]),
            host=str(data["host"]),
            endpoint=str(data["endpoint"]),
            state=ContainerState(data["state"]),
            error_count=int(data.get("error_count", 0)),
            restarts=int(data.get("restarts", 0)),
            memory_mb=None if data.get("memory_mb") is None else float(data["memory_mb"]),
            started_at=float(data.get("started_at", 0.0)),
        )


@dataclass(frozen=True)
class LeaseInfo:
    """A live lease as stored in Redis (times are Redis server milliseconds)."""

    container: str
    token: str
    test_run_id: str
    job_id: str
    worker: str
    granted_ms: int
    expires_ms: int
    cap_ms: int

    @classmethod
    def from_json_dict(cls, container: str, data: dict[str, Any]) -> LeaseInfo:
        return cls(
            container=container,
            token=str(data["token"]),
            test_run_id=str(data.get("test_run_id", "")),
            job_id=str(data.get("job_id", "")),
            worker=str(data.get("worker", "")),
            granted_ms=int(data["granted_ms"]),
            expires_ms=int(data["expires_ms"]),
            cap_ms=int(data["cap_ms"]),
        )
