"""The one door for data read from Redis: bytes in, domain values or a :class:`Rejected` out.

Workers hold write access to the pool's keys, so anything in them may have been written by
something other than the pool's scripts. Nothing downstream calls ``int()`` or ``json.loads`` on
a raw value: the lease store passes every reply through here. A value that does not decode is
returned as a :class:`Rejected` (key, field, a shortened escaped copy, the reason) for the
supervisor to report once and drop; it never raises out of a snapshot or an event read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from cinnamon_pool.errors import CinnamonError, InvalidIdentifier
from cinnamon_pool.events import MAX_TEXT, SCHEMA, EventKind, FieldType, LeaseEvent
from cinnamon_pool.model import (
    ARTIFACT_POLICIES,
    ApiKey,
    ConnectSession,
    ContainerRecord,
    ContainerState,
    Grant,
    HeldSession,
    LeaseInfo,
    LeaseTrace,
    PoolSnapshot,
    Rejected,
    Waiter,
    validate_container_name,
    validate_docker_id,
    validate_endpoint,
    validate_host,
    validate_key_name,
    validate_test_run_id,
    validate_ticket,
    validate_token,
)

MAX_VALUE_BYTES = 64 * 1024  # larger than anything the scripts write
SHOWN_CHARS = 80
T = TypeVar("T")
_INT = re.compile(r"-?\d{1,19}")


class BadValue(CinnamonError, ValueError):
    """A value read from Redis is not what the pool's scripts write."""


def shorten(raw: object, limit: int = SHOWN_CHARS) -> str:
    """A copy safe for one log line: control characters escaped, at most ``limit`` characters."""
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else str(raw)
    escaped = text.encode("unicode_escape").decode("ascii")
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


def text(raw: object, what: str = "value", limit: int = MAX_TEXT) -> str:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadValue(f"{what} is not UTF-8") from None
    if not isinstance(raw, str):
        raise BadValue(f"{what} must be a string, not {type(raw).__name__}")
    if len(raw) > limit:
        raise BadValue(f"{what} is {len(raw)} characters long (at most {limit})")
    return raw


def integer(raw: object, what: str = "value", *, minimum: int | None = None) -> int:
    if isinstance(raw, bool):
        raise BadValue(f"{what} must be a whole number")
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if not isinstance(raw, int):
        value = text(raw, what, 20)
        if not _INT.fullmatch(value):
            raise BadValue(f"{what} must be a whole number")
        raw = int(value)
    if minimum is not None and raw < minimum:
        raise BadValue(f"{what} must be >= {minimum}")
    return raw


def number(raw: object, what: str = "value") -> float:
    if isinstance(raw, bool):
        raise BadValue(f"{what} must be a number")
    if isinstance(raw, (bytes, str)):
        try:
            raw = float(text(raw, what, 32))
        except ValueError:
            raise BadValue(f"{what} must be a number") from None
    if not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise BadValue(f"{what} must be a finite number")
    return float(raw)


def json_object(raw: object, what: str) -> dict[str, Any]:
    if isinstance(raw, (bytes, str)) and len(raw) > MAX_VALUE_BYTES:
        raise BadValue(f"{what} is {len(raw)} bytes (at most {MAX_VALUE_BYTES})")
    try:
        value = json.loads(text(raw, what, MAX_VALUE_BYTES))
    except json.JSONDecodeError as error:
        raise BadValue(f"{what} is not JSON: {error.msg}") from None
    if not isinstance(value, dict):
        raise BadValue(f"{what} must be a JSON object")
    return value


def _checked(check: Callable[[object], str], value: object) -> str:
    try:
        return check(value)
    except InvalidIdentifier as error:
        raise BadValue(str(error)) from None


def record(field: object, raw: object) -> ContainerRecord:
    name = _checked(validate_container_name, text(field, "container name", 64))
    data = json_object(raw, "container record")
    if data.get("name") != name:
        raise BadValue(f"record under {name!r} names {shorten(data.get('name'))!r}")
    memory = data.get("memory_mb")
    try:
        state = ContainerState(str(data.get("state")))
    except ValueError:
        raise BadValue(f"state {shorten(data.get('state'))!r} is not one of {', '.join(s.value for s in ContainerState)}") from None
    return ContainerRecord(
        name=name,
        container_id=_checked(validate_docker_id, data.get("container_id")),
        slot=integer(data.get("slot"), "slot", minimum=1),
        host=_checked(validate_host, data.get("host")),
        endpoint=_checked(validate_endpoint, data.get("endpoint")),
        state=state,
        error_count=integer(data.get("error_count", 0), "error_count", minimum=0),
        restarts=integer(data.get("restarts", 0), "restarts", minimum=0),
        memory_mb=None if memory is None else number(memory, "memory_mb"),
        started_at=number(data.get("started_at", 0.0), "started_at"),
        reason=text(data.get("reason", ""), "reason", MAX_TEXT),
        last_cleanup_ms=integer(data.get("last_cleanup_ms", 0), "last_cleanup_ms", minimum=0),
        last_outcome=text(data.get("last_outcome", ""), "last_outcome", 20),
    )


def lease(field: object, raw: object) -> LeaseInfo:
    name = _checked(validate_container_name, text(field, "container name", 64))
    data = json_object(raw, "lease")
    return LeaseInfo(
        container=name,
        token=_checked(validate_token, data.get("token")),
        test_run_id=text(data.get("test_run_id", ""), "test_run_id", 128),
        job_id=text(data.get("job_id", ""), "job_id", 200),
        worker=text(data.get("worker", ""), "worker", 200),
        granted_ms=integer(data.get("granted_ms"), "granted_ms"),
        expires_ms=integer(data.get("expires_ms"), "expires_ms"),
        cap_ms=integer(data.get("cap_ms"), "cap_ms"),
        artifacts=_policy(data.get("artifacts", "")),
    )


def _policy(raw: object) -> str:
    if raw not in ARTIFACT_POLICIES:
        raise BadValue(f"artifacts {shorten(raw)!r} is not one of {', '.join(p for p in ARTIFACT_POLICIES if p)}")
    return str(raw)


def waiter(raw: object) -> Waiter:
    """A waiting acquirer's ticket (written by acquire.lua from the client's request)."""
    data = json_object(raw, "ticket")
    return Waiter(
        test_run_id=text(data.get("test_run_id", ""), "test_run_id", 128),
        job_id=text(data.get("job_id", ""), "job_id", 200),
        worker=text(data.get("worker", ""), "worker", 200),
        queued_ms=integer(data.get("queued_ms", 0), "queued_ms", minimum=0),
    )


SESSION_ID = re.compile(r"[\x21-\x7e]{1,128}")  # MCP: visible ASCII
MAX_SESSION_JSON = 64 * 1024


def held_session(field: object, raw: object) -> HeldSession:
    """A session the gateway holds on a container (``prepared|<name>`` or ``keeper|<name>``)."""
    kind, _, name = text(field, "session field", 80).partition("|")
    if kind not in {"prepared", "keeper"}:
        raise BadValue(f"session field {shorten(field)!r} is not prepared|<name> or keeper|<name>")
    name = _checked(validate_container_name, name)
    if len(_bytes(raw)) > MAX_SESSION_JSON:
        raise BadValue(f"session JSON is over {MAX_SESSION_JSON} bytes")
    data = json_object(raw, "session")
    session = text(data.get("session"), "session id", 128)
    if not SESSION_ID.fullmatch(session):
        raise BadValue(f"session id {shorten(session)!r} is not 1-128 visible ASCII characters")
    result = data.get("result", {})
    if not isinstance(result, dict) or not isinstance(result.get("protocolVersion", ""), str):
        raise BadValue("session result must be an initialize result (a JSON object)")
    return HeldSession(
        kind=kind,
        name=name,
        container_id=_checked(validate_docker_id, data.get("container_id")),
        session=session,
        result=result,
        prepared_ms=integer(data.get("prepared_ms"), "prepared_ms", minimum=0),
        restarts=integer(data.get("restarts", 0), "restarts", minimum=0),
        tracing=data.get("tracing") is True,
    )


def lease_sessions(field: object, raw: object) -> tuple[str, list[str], LeaseTrace | None]:
    """The MCP sessions a lease opened, as the gateway keeps them: (token, session ids, the trace
    its handed session records or None)."""
    _checked(validate_container_name, text(field, "container name", 64))
    if len(_bytes(raw)) > MAX_SESSION_JSON:
        raise BadValue(f"lease sessions JSON is over {MAX_SESSION_JSON} bytes")
    data = json_object(raw, "lease sessions")
    sessions = data.get("sessions")
    if not isinstance(sessions, list) or not all(isinstance(s, str) and SESSION_ID.fullmatch(s) for s in sessions):
        raise BadValue("sessions must be a list of session ids (1-128 visible ASCII characters)")
    return _checked(validate_token, data.get("token")), sessions, _lease_trace(data.get("trace"))


def _lease_trace(raw: object) -> LeaseTrace | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BadValue("trace must be a JSON object")
    session, path = text(raw.get("session"), "trace session", 128), text(raw.get("path"), "trace path", 300)
    if not SESSION_ID.fullmatch(session):
        raise BadValue(f"trace session {shorten(session)!r} is not 1-128 visible ASCII characters")
    if not re.fullmatch(r"artifacts/\d{4}-\d{2}-\d{2}/[A-Za-z0-9_.@+-]{1,128}/trace\.zip", path) or "/." in path:
        raise BadValue(f"trace path {shorten(path)!r} is not artifacts/<date>/<test run id>/trace.zip")
    return LeaseTrace(session, _policy(raw.get("policy", "")), path)


def api_key(raw: object) -> ApiKey:
    """An API key's record (``keys create`` wrote it): name, max sessions, created."""
    if len(_bytes(raw)) > MAX_SESSION_JSON:
        raise BadValue(f"API key JSON is over {MAX_SESSION_JSON} bytes")
    data = json_object(raw, "API key")
    return ApiKey(
        name=_checked(validate_key_name, data.get("name")),
        max_sessions=integer(data.get("max_sessions"), "max_sessions", minimum=1),
        created_ms=integer(data.get("created_ms"), "created_ms", minimum=0),
        unsafe_tools=data.get("unsafe_tools") is True,
    )


def connect_session(field: object, raw: object) -> ConnectSession:
    """An on-connect session's binding, as a gateway wrote it."""
    session = text(field, "session id", 128)
    if not SESSION_ID.fullmatch(session):
        raise BadValue(f"session id {shorten(session)!r} is not 1-128 visible ASCII characters")
    if len(_bytes(raw)) > MAX_SESSION_JSON:
        raise BadValue(f"connect session JSON is over {MAX_SESSION_JSON} bytes")
    data = json_object(raw, "connect session")
    return ConnectSession(
        session=session,
        key=_checked(validate_key_name, data.get("key")),
        container=_checked(validate_container_name, data.get("container")),
        token=_checked(validate_token, data.get("token")),
        test_run_id=_checked(validate_test_run_id, data.get("test_run_id")),
        opened_ms=integer(data.get("opened_ms"), "opened_ms", minimum=0),
        nonce=_checked(validate_ticket, data.get("nonce")),
    )


def grant(raw: object, claim: Callable[[str], str] | None = None) -> Grant:
    """A grant from a script's reply or a wake list; it names the endpoint a worker will call, and
    the token that ``claim`` makes of the fingerprint (tokens.py), or the fingerprint without it."""
    data = json_object(raw, "grant")
    return Grant(
        name=_checked(validate_container_name, data.get("name")),
        container_id=_checked(validate_docker_id, data.get("container_id")),
        endpoint=_checked(validate_endpoint, data.get("endpoint")),
        host=_checked(validate_host, data.get("host")),
        slot=integer(data.get("slot"), "slot", minimum=1),
        test_run_id=text(data.get("test_run_id"), "test_run_id", 128),
        granted_ms=integer(data.get("granted_ms"), "granted_ms"),
        expires_ms=integer(data.get("expires_ms"), "expires_ms"),
        cap_ms=integer(data.get("cap_ms"), "cap_ms"),
        token=(claim or str)(_checked(validate_token, data.get("token"))),  # last: a grant that does not decode is BadValue first
    )


def event(entry_id: object, fields: Mapping[Any, Any]) -> LeaseEvent:
    """A stream entry checked against :data:`cinnamon_pool.events.SCHEMA`."""
    values = {text(k, "field name", 64): v for k, v in fields.items()}
    try:
        kind = EventKind(text(values.get("kind"), "kind", 32))
    except ValueError:
        raise BadValue(f"unknown event kind {shorten(values.get('kind'))!r}") from None
    decoded: dict[str, str | int | float | None] = {}
    for field, (kind_of, required) in SCHEMA[kind].items():
        raw = values.get(field)
        if raw is None or (raw in (b"", "") and kind_of is not FieldType.TEXT):
            if required:
                raise BadValue(f"{kind.value} event without {field!r}")
            continue
        if kind_of is FieldType.INT:
            decoded[field] = integer(raw, field)
        elif kind_of is FieldType.DECIMAL:
            decoded[field] = number(raw, field)
        else:
            decoded[field] = text(raw, field)
    return LeaseEvent(
        entry_id=text(entry_id, "entry id", 64),
        kind=kind,
        name=text(values.get("name", ""), "name", 64),
        at_ms=integer(values.get("at_ms"), "at_ms", minimum=0),
        values=decoded,
    )


def _each(key: str, items: Mapping[Any, Any], decode: Callable[[Any, Any], T], rejected: list[Rejected]) -> dict[str, T]:
    out: dict[str, T] = {}
    for field, raw in items.items():
        try:
            out[text(field, "field", 256)] = decode(field, raw)
        except BadValue as error:
            rejected.append(Rejected(key, shorten(field, 64), shorten(raw), str(error), _bytes(raw), _bytes(field)))
    return out


def _bytes(raw: object) -> bytes:
    return raw if isinstance(raw, bytes) else str(raw).encode()


def _whole(key: str, raw: object, rejected: list[Rejected], expected: type | tuple[type, ...]) -> Any:
    """A whole reply: an error reply (the key holds the wrong type) or a reply of the wrong shape
    is rejected, and the key reads as empty."""
    if isinstance(raw, Exception) or not isinstance(raw, expected):
        rejected.append(Rejected(key, "", shorten(raw), f"cannot be read: {shorten(raw, 160)}"))
        return None
    return raw


def time_ms(reply: Any) -> int:
    """Redis ``TIME`` (seconds, microseconds) in milliseconds: the clock leases are judged by."""
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def snapshot(replies: Mapping[str, Any]) -> PoolSnapshot:
    """The pool from the replies of one MULTI/EXEC (see ``LeaseStore.snapshot``); a reply may be
    an exception object when a key holds the wrong type."""
    rejected: list[Rejected] = []
    seconds, micros = replies["time"]  # the server's own reply: never written by anyone else
    epoch_raw = _whole("meta", replies["epoch"], rejected, (bytes, str, type(None)))
    epoch = None
    if epoch_raw is not None:
        try:
            epoch = text(epoch_raw, "epoch", 64)
        except BadValue as error:
            rejected.append(Rejected("meta", "epoch", shorten(epoch_raw), str(error)))
    containers = _each("containers", _whole("containers", replies["containers"], rejected, dict) or {}, record, rejected)
    leases = _each("leases", _whole("leases", replies["leases"], rejected, dict) or {}, lease, rejected)
    free_pairs = _whole("free", replies["free"], rejected, list) or []
    unreadable = {r.raw_field for r in rejected if r.key == "containers"}  # their free entries go with them
    free_pairs = [(name, score) for name, score in free_pairs if _bytes(name) not in unreadable]
    free_since = _each("free", dict(free_pairs), lambda f, s: _free_member(f, s, containers), rejected)
    memory = _each("memory", _whole("memory", replies["memory"], rejected, dict) or {}, lambda f, v: number(v, "memory"), rejected)
    cpu = _each("cpu", _whole("cpu", replies.get("cpu"), rejected, dict) or {}, lambda f, v: number(v, "cpu"), rejected)
    desired = _each(
        "desired",
        _whole("desired", replies["desired"], rejected, dict) or {},
        lambda f, v: (_checked(validate_host, text(f, "host", 128)), integer(v, "size", minimum=0))[1],
        rejected,
    )
    hosts = _each(
        "hosts",
        _whole("hosts", replies["hosts"], rejected, dict) or {},
        lambda f, v: (_checked(validate_host, text(f, "host", 128)), integer(v, "host index", minimum=0))[1],
        rejected,
    )
    waiting = _whole("waiters", replies["waiting"], rejected, int)
    draining = _whole("draining", replies["draining"], rejected, int)
    return PoolSnapshot(
        epoch=epoch,
        containers=containers,
        leases=leases,
        free=sorted(free_since, key=lambda name: free_since[name]),
        free_since_ms=free_since,
        waiting=waiting or 0,
        draining=bool(draining),
        memory_mb=memory,
        cpu_percent=cpu,
        now_ms=time_ms((seconds, micros)),
        desired=desired,
        hosts=hosts,
        rejected=tuple(rejected),
    )


def _free_member(field: object, score: object, containers: Mapping[str, ContainerRecord]) -> int:
    name = _checked(validate_container_name, text(field, "container name", 64))
    if name not in containers:
        raise BadValue(f"free container {name!r} has no readable record")
    return int(number(score, "free since"))
