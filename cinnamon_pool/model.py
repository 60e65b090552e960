"""The pool's vocabulary: container states, release outcomes, records, and identifier checks.

Every identifier that reaches a Redis key, a Docker call, a label or a log line passes one of
the ``validate_*`` functions first; they raise :class:`InvalidIdentifier` naming the value.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cinnamon_pool.errors import InvalidIdentifier


class ContainerState(enum.StrEnum):
    STARTING = "starting"  # created, not yet ready
    AVAILABLE = "available"  # ready, in the free set
    ALLOCATED = "allocated"  # leased to a job
    PREPARING = "preparing"  # released; its gateway prepares the next job's session, then offers it
    DRAINING = "draining"  # leased, restart when released
    RESTARTING = "restarting"  # must be recycled before it serves again
    UNHEALTHY = "unhealthy"  # failed probes, to be replaced


class Outcome(enum.StrEnum):
    """What a job reports when it releases: only ``infra_error`` counts against the container."""

    OK = "ok"
    TEST_FAILED = "test_failed"
    INFRA_ERROR = "infra_error"


class Artifacts(enum.StrEnum):
    """When a lease's artifacts (trace, snapshot, screenshot, console) are kept: the holder's
    policy (``@with_container(artifacts=...)``, ``X-Cinnamon-Artifacts``); plain strings work too."""

    FAILURE = "failure"
    ALWAYS = "always"
    NEVER = "never"


ARTIFACTS = tuple(policy.value for policy in Artifacts)
ARTIFACT_POLICIES = ("", *ARTIFACTS)  # "" = not said: failure


class SizeMode(enum.StrEnum):
    """How a supervisor sets its host's desired size (set_size.lua)."""

    SET = "set"
    INIT = "init"  # adopt a size already stored (a restarted or standby supervisor)
    GROW = "grow"  # only when no host of the pool grew within the cool-down (one host answers waiters)


class Preparation(enum.StrEnum):
    """How a preparation of a released container ended (prepared.lua): all but residue offer it."""

    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    RESIDUE = "residue"  # the canary found what a job left: restarted instead


def keeps_artifacts(policy: str, outcome: str) -> bool:
    """Whether a lease's artifacts are kept: ``always``; ``failure`` (or not said) when the job did
    not end ``ok`` (it failed, or the lease ended without a release: expired, reclaimed); never ``never``."""
    return policy == Artifacts.ALWAYS or (policy in {"", Artifacts.FAILURE} and outcome != Outcome.OK)


_POOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_CONTAINER_NAME = re.compile(r"container-\d{3,6}")
_TEST_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}")
_DOCKER_ID = re.compile(r"[0-9a-f]{64}")
_TOKEN = re.compile(r"[0-9a-f]{16}:\d{1,19}:[0-9a-f]{16}")
_TICKET = re.compile(r"[0-9a-f]{32}")
_HOST = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
_KEY_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


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


def validate_key_name(value: object) -> str:
    return _check("API key name", value, _KEY_NAME, "1-63 of a-z 0-9 _ - starting with a letter or digit")


def validate_host(value: object) -> str:
    return _check("docker host name", value, _HOST, "1-128 of A-Z a-z 0-9 _ . -")


SLOTS_PER_HOST = 1000  # host k (in the order hosts joined the pool) serves slots k*1000+1 .. k*1000+999


def container_name(slot: int) -> str:
    """container-001 for slot 1; a second Docker host's slots are container-1001, 1002, ..."""
    return validate_container_name(f"container-{slot:03d}")


def local_slot(slot: int) -> int:
    """The slot's number on its own host (1 .. 999): which of the host's ports it publishes on."""
    return slot % SLOTS_PER_HOST


def validate_endpoint(value: object) -> str:
    """An MCP URL a worker may connect to and send its token: http or https, a host, no
    userinfo, at most 256 printable characters (a record in Redis may have been forged)."""
    if not isinstance(value, str):
        raise InvalidIdentifier("endpoint", value, "must be a string")
    if 0 < len(value) <= 256 and _ENDPOINT.fullmatch(value):  # (the pattern admits printable characters only)
        return value
    if not 0 < len(value) <= 256 or any(ord(c) <= 32 or ord(c) == 127 for c in value):
        raise InvalidIdentifier("endpoint", value, "must be 1-256 printable characters without spaces")
    raise InvalidIdentifier("endpoint", value, "must be an http:// or https:// URL with a host and no user:password@")


_ENDPOINT = re.compile(r"https?://[A-Za-z0-9.\-]+(:\d{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?")


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
    reason: str = ""  # why it was last sent draining, restarting or unhealthy
    last_cleanup_ms: int = 0  # Redis time the last job's cleanup ended (its release); 0 = none yet
    last_outcome: str = ""  # the outcome its last release reported (ok, test_failed, infra_error); "" = none yet

    def to_json_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "state": self.state.value}


CLIENT_PREFIX = "key:"  # the holder's worker field of a lease a gateway took for an API-key client


def client_of(worker: str) -> str | None:
    """The API key name of a session on connect's holder; ``None`` for a job's."""
    return worker.removeprefix(CLIENT_PREFIX) if worker.startswith(CLIENT_PREFIX) else None


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
    artifacts: str = ""  # the holder's artifacts policy ("" = not said: failure)


@dataclass(frozen=True)
class Waiter:
    """An acquirer waiting in the pool's queue (``status`` shows the queue)."""

    test_run_id: str
    job_id: str
    worker: str
    queued_ms: int  # Redis time it joined the queue


@dataclass(frozen=True)
class Holder:
    """Who asks for a lease: recorded with it and shown in logs and ``status``."""

    test_run_id: str
    job_id: str = ""
    worker: str = ""
    artifacts: str = ""  # when the lease's Playwright trace is kept: failure, always, never ("" = failure)

    def __post_init__(self) -> None:
        validate_test_run_id(self.test_run_id)
        if self.artifacts not in ARTIFACT_POLICIES:
            raise ValueError(f"artifacts={self.artifacts!r}: use one of {', '.join(p for p in ARTIFACT_POLICIES if p)}")
        for kind, value in (("job id", self.job_id), ("worker name", self.worker)):
            if len(value) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise ValueError(f"invalid {kind} {value!r}: at most 200 printable characters")


@dataclass(frozen=True)
class LeaseTrace:
    """A lease whose session records a trace, as the gateway keeps it beside the lease's sessions."""

    session: str  # the MCP session that records (the prepared session handed over)
    policy: str  # the holder's artifacts policy: "", failure, always or never
    path: str  # where it is kept, relative to logs.dir: artifacts/<date>/<test run id>/trace.zip

    def to_json_dict(self) -> dict[str, str]:
        return {"session": self.session, "policy": self.policy, "path": self.path}


@dataclass(frozen=True)
class HeldSession:
    """An MCP session the gateway holds on a free container: a keeper (keeps the browser up,
    never handed out) or a prepared session (browser context and blank page ready, handed to the
    next job at its ``initialize``, exactly once)."""

    kind: str  # "prepared" | "keeper"
    name: str
    container_id: str
    session: str  # the server's mcp-session-id
    result: Mapping[str, Any]  # the server's answer to the session's initialize
    prepared_ms: int  # wall clock, ms
    restarts: int = 0  # the container's restarts when it was made (a restart in place keeps the id, not the sessions)
    tracing: bool = False  # it records a Playwright trace (gateway/traces.py)

    @property
    def field(self) -> str:
        return f"{self.kind}|{self.name}"

    def lives_in(self, container_id: str, restarts: int) -> bool:
        """Whether the session was made in this very run of the container: same id, no restart since."""
        return self.container_id == container_id and self.restarts == restarts

    def to_json(self) -> str:
        return json.dumps(
            {
                "session": self.session,
                "container_id": self.container_id,
                "restarts": self.restarts,
                "result": dict(self.result),
                "prepared_ms": self.prepared_ms,
                "tracing": self.tracing,
            }
        )


@dataclass(frozen=True)
class Grant:
    """What acquire returns: the container, its endpoint and the fencing token."""

    name: str
    container_id: str
    endpoint: str
    host: str
    slot: int
    token: str
    test_run_id: str
    granted_ms: int
    expires_ms: int
    cap_ms: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Rejected:
    """A value read from Redis that the decoder refused: where it was, a shortened escaped copy
    of it, and why. Reported once and dropped; it never stops a process."""

    key: str  # the schema name: containers, leases, free, memory, desired, events, ...
    field: str  # hash field, zset member or stream entry id ('' for a whole key)
    value: str  # escaped, at most 80 characters
    reason: str
    raw: bytes = b""  # the exact value, for a compare-and-delete
    raw_field: bytes = b""  # the exact field or member

    def __str__(self) -> str:
        where = f"{self.key}[{self.field}]" if self.field else self.key
        return f"{where} = {self.value!r}: {self.reason}"


@dataclass(frozen=True)
class PoolSnapshot:
    """The whole pool read in one round trip (MULTI/EXEC), every value decoded; what could not be
    decoded is in ``rejected`` instead."""

    epoch: str | None
    containers: dict[str, ContainerRecord]
    leases: dict[str, LeaseInfo]
    free: list[str]
    free_since_ms: dict[str, int]
    waiting: int
    draining: bool
    memory_mb: dict[str, float]
    now_ms: int
    desired: dict[str, int] = dataclasses.field(default_factory=dict)  # host -> slots it serves
    cpu_percent: dict[str, float] = dataclasses.field(default_factory=dict)  # by container: % of one core, last tick
    hosts: dict[str, int] = dataclasses.field(default_factory=dict)  # host -> its index (slots k*1000+1 ..)
    rejected: tuple[Rejected, ...] = ()

    def count(self, state: ContainerState) -> int:
        return sum(1 for record in self.containers.values() if record.state is state)


@dataclass(frozen=True)
class ApiKey:
    """An API key as the pool knows it (its hash is the Redis field; the key itself is kept nowhere)."""

    name: str
    max_sessions: int
    created_ms: int
    last_used_ms: int = 0
    unsafe_tools: bool = False  # its sessions may run code in the browser server (gateway/unsafe.py)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_sessions": self.max_sessions,
            "created_ms": self.created_ms,
            "last_used_ms": self.last_used_ms,
            "unsafe_tools": self.unsafe_tools,
        }


@dataclass(frozen=True)
class ConnectSession:
    """An MCP session opened on connect: which key opened it, on which container and lease."""

    session: str
    key: str  # the key's name
    container: str
    token: str  # the lease's fingerprint (tokens.py): never the token itself
    test_run_id: str
    opened_ms: int
    nonce: str  # the gateway makes the token's secret again from it and its own key

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "container": self.container,
            "token": self.token,
            "test_run_id": self.test_run_id,
            "opened_ms": self.opened_ms,
            "nonce": self.nonce,
        }
