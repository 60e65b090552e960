"""A history of the lease protocol as clients and server saw it, and a checker of its invariants.

Three files in one directory make a history:

- ``client-<pid>.jsonl``: what each client process did, one line per phase of an operation,
  ``{"op", "phase", "t", "pid", "container", "token", "detail"}``. ``op`` is acquire, renew,
  release or use (a call to the container); ``phase`` is invoke, ok, fail (rejected: it did not
  happen) or unknown (the reply was lost: it may have happened). ``t`` is Redis ``TIME`` in ms,
  read just before an invoke and just after its outcome, so a measured interval contains the
  real one. A use's outcome may carry ``served_t``: when the container itself served the call
  (the fake-mcp says so, on the same host clock). A process stopped between the call and its
  outcome record stretches the measured interval over later holders; the served moment does
  not move, so the checker prefers it.
- ``events.jsonl``: the pool's event stream, copied by :class:`StreamTail` as it grows, so a
  Redis that restarts empty loses at most the events of its last moments; a
  ``stream_restarted`` line marks where a new stream began.
- ``faults.jsonl``: what the fault injector did, ``{"t", "fault", "pids"}``.

:func:`check` reads them back and returns the violations (an empty list is a pass):
no overlapping grants per container, uses only under the current token and before the cap,
no two tokens using one container at once, every acquire resolved (or its process killed), and
FIFO among live waiters. It also measures the idle gap between a release and the next grant
while jobs wait.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis

from cinnamon_pool.keys import PoolKeys

T = TypeVar("T")
REJECTIONS = ("LeaseLost", "LeaseNotOwned", "PoolExhausted", "PoolNotReady")


def redis_ms(client: redis.Redis) -> int | None:
    """Redis TIME in ms; None when Redis does not answer (the checker then skips timing)."""
    try:
        seconds, micros = client.time()
    except redis.RedisError:
        return None
    return int(seconds) * 1000 + int(micros) // 1000


class ClientHistory:
    """Appends this process's operations to ``client-<pid>.jsonl`` (one write per line, so
    a process killed mid-write leaves at most one torn last line, which the reader skips)."""

    def __init__(self, directory: Path, client: redis.Redis) -> None:
        self.directory, self.client = directory, client
        self._fd: int | None = None
        self._pid = 0

    def record(
        self,
        op: str,
        phase: str,
        container: str = "",
        token: str = "",
        detail: str = "",
        invoked_t: int | None = None,
        served_t: int | None = None,
    ) -> int | None:
        if self._pid != os.getpid():  # opened lazily, and again after a fork
            self._pid = os.getpid()
            self._fd = os.open(self.directory / f"client-{self._pid}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        t = redis_ms(self.client)
        line: dict[str, Any] = {"op": op, "phase": phase, "t": t, "pid": self._pid, "container": container, "token": token}
        if invoked_t is not None:
            line["invoked_t"] = invoked_t
        if served_t is not None:
            line["served_t"] = served_t
        if detail:
            line["detail"] = detail[:200]
        assert self._fd is not None
        os.write(self._fd, (json.dumps(line) + "\n").encode())
        return t

    def around(
        self, op: str, call: Callable[[], T], container: str = "", token: str = "", served: Callable[[T], int | None] | None = None
    ) -> T:
        """Run ``call`` between an invoke and its outcome; a grant's container and token are
        read from the result, and ``served`` reads from it when the container did the work
        (host clock, ms), which pins a use to a moment instead of the measured interval."""
        invoked = self.record(op, "invoke", container, token)
        try:
            result = call()
        except Exception as error:
            kind = type(error).__name__
            phase = "fail" if kind in REJECTIONS else "unknown"
            self.record(op, phase, container, token, f"{kind}: {error}", invoked)
            raise
        name, granted = getattr(result, "name", container), getattr(result, "token", token)
        self.record(op, "ok", name, granted, invoked_t=invoked, served_t=served(result) if served else None)
        return result


def instrument(store_class: type, history: ClientHistory) -> None:
    """Record every acquire, renew and release made through ``store_class`` (a LeaseStore)."""
    original_acquire, original_renew, original_release = store_class.acquire, store_class.renew, store_class.release

    @functools.wraps(original_acquire)
    def acquire(self: Any, *args: Any, **kwargs: Any) -> Any:
        return history.around("acquire", lambda: original_acquire(self, *args, **kwargs))

    @functools.wraps(original_renew)
    def renew(self: Any, name: str, token: str, *args: Any, **kwargs: Any) -> Any:
        return history.around("renew", lambda: original_renew(self, name, token, *args, **kwargs), name, token)

    @functools.wraps(original_release)
    def release(self: Any, name: str, token: str, *args: Any, **kwargs: Any) -> Any:
        return history.around("release", lambda: original_release(self, name, token, *args, **kwargs), name, token)

    store_class.acquire, store_class.renew, store_class.release = acquire, renew, release  # type: ignore[attr-defined]


class StreamTail:
    """Copies the pool's event stream to ``events.jsonl`` as it grows, in a thread. After Redis
    comes back empty it starts over from the new stream's beginning."""

    def __init__(self, url: str, pool: str, directory: Path) -> None:
        self.url, self.key, self.path = url, PoolKeys(pool).events, directory / "events.jsonl"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stream-tail", daemon=True)

    def __enter__(self) -> StreamTail:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # the last events of the run
        self.stop.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=5, decode_responses=True)
        last, server = "0-0", ""
        with self.path.open("a") as out:
            while not self.stop.is_set():
                try:
                    run_id = client.info("server")["run_id"]
                    if server and run_id != server:  # Redis restarted (empty, in the soak): a new stream
                        last = "0-0"
                        out.write(json.dumps({"kind": "stream_restarted", "at_ms": redis_ms(client) or 0}) + "\n")
                    server = run_id
                    for _, entries in client.xread({self.key: last}, count=1000, block=200) or []:
                        for entry_id, fields in entries:
                            out.write(json.dumps({"id": entry_id, **fields}) + "\n")
                            last = entry_id
                    out.flush()
                except redis.RedisError:
                    time.sleep(0.2)


def record_fault(directory: Path, client: redis.Redis, fault: str, pids: list[int] | None = None) -> None:
    with (directory / "faults.jsonl").open("a") as out:
        out.write(json.dumps({"t": redis_ms(client) or int(time.time() * 1000), "fault": fault, "pids": pids or []}) + "\n")


# -- reading and checking ------------------------------------------------------------------
def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as source:
        for line in source:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # the torn last line of a killed process


@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    grants: int = 0
    uses: int = 0
    acquires: int = 0
    unresolved_killed: int = 0
    max_handoff_gap_ms: int = 0
    handoffs: int = 0
    queued: int = 0
    epochs: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "violations": self.violations,
            "grants": self.grants,
            "uses": self.uses,
            "acquires": self.acquires,
            "unresolved_acquires_of_killed_processes": self.unresolved_killed,
            "queued": self.queued,
            "handoffs": self.handoffs,
            "max_handoff_gap_ms": self.max_handoff_gap_ms,
            "epochs": self.epochs,
        }


@dataclass
class _Lease:
    container: str
    token: str
    granted_ms: int
    ended_ms: int | None = None


def check(directory: Path, max_lease_ms: int) -> Report:
    """Verify the lease invariants over a history directory (see the module docstring)."""
    report = Report()
    events = list(_lines(directory / "events.jsonl")) if (directory / "events.jsonl").exists() else []
    leases = _check_server(events, max_lease_ms, report)
    clients = [list(_lines(path)) for path in sorted(directory.glob("client-*.jsonl"))]
    for records in clients:
        _check_client(records, leases, max_lease_ms, report)
    _check_exclusive_use(clients, report)
    return report


def _epoch(token: str) -> str:
    return token.split(":", 1)[0]


def _check_server(events: list[dict[str, Any]], max_lease_ms: int, report: Report) -> dict[str, _Lease]:
    """Walk the stream in order: grants per container never overlap; FIFO among live waiters;
    no release past the cap. Returns every lease by token."""
    leases: dict[str, _Lease] = {}
    holder: dict[str, _Lease] = {}  # container -> current lease
    queue: list[str] = []  # live tickets, oldest first
    released_at: dict[str, int] = {}  # container -> when it was released while tickets waited
    epoch = ""
    for event in events:
        kind, name, at = event.get("kind"), event.get("name", ""), int(event.get("at_ms", 0))
        token = event.get("token", "")
        if kind == "stream_restarted" or (token and _epoch(token) != epoch):
            # Redis lost its state: every earlier lease and ticket is dead.
            if token:
                epoch = _epoch(token)
                report.epochs += 1
            for lease in holder.values():
                lease.ended_ms = lease.ended_ms or at
            holder.clear()
            if kind == "stream_restarted":
                queue.clear()
        if kind == "waiting":
            report.queued += 1
            queue.append(event["ticket"])
        elif kind == "waiter_gone":
            if event["ticket"] in queue:
                queue.remove(event["ticket"])
        elif kind == "granted":
            report.grants += 1
            current = holder.get(name)
            if current is not None:
                report.violations.append(f"{name}: granted to {token} at {at} while {current.token} held it (since {current.granted_ms})")
            ticket = event.get("ticket", "")
            if queue and ticket != queue[0]:
                report.violations.append(f"FIFO: {name} granted at {at} to ticket {ticket or '(none)'} while {queue[0]} waited longer")
            if ticket in queue:
                queue.remove(ticket)
            if name in released_at and ticket:
                report.handoffs += 1
                report.max_handoff_gap_ms = max(report.max_handoff_gap_ms, at - released_at.pop(name))
            holder[name] = leases[token] = _Lease(name, token, at)
        elif kind in {"released", "revoked"}:
            lease = leases.get(token)
            if lease is not None and lease.ended_ms is None:
                lease.ended_ms = at
            if holder.get(name) is not None and holder[name].token == token:
                del holder[name]
            if kind == "released" and queue:
                released_at[name] = at
            if kind == "released" and int(event.get("duration_ms", 0)) > max_lease_ms:
                report.violations.append(f"{name}: {token} released after {event['duration_ms']} ms, past the cap {max_lease_ms} ms")
        elif kind == "state" and event.get("to") in {"restarting", "unhealthy", "removed"}:
            released_at.pop(name, None)
    return leases


def _check_client(records: list[dict[str, Any]], leases: dict[str, _Lease], cap_ms: int, report: Report) -> None:
    """Uses happen under a current token before its cap; every acquire gets an outcome."""
    pending: dict[str, dict[str, Any]] = {}  # op -> its open invoke
    for record in records:
        op, phase, t = record["op"], record["phase"], record.get("t")
        if op == "acquire":
            report.acquires += phase == "invoke"
        if phase == "invoke":
            pending[op] = record
            continue
        pending.pop(op, None)
        if op != "use" or phase != "ok":
            continue
        report.uses += 1
        invoked = record.get("served_t", record.get("invoked_t"))
        lease = leases.get(record["token"])
        if lease is None or t is None or invoked is None:
            continue  # its grant fell in the moments a restarted Redis lost
        if invoked < lease.granted_ms:
            report.violations.append(f"{record['container']}: {record['token']} used at {invoked}, before its grant at {lease.granted_ms}")
        if lease.ended_ms is not None and invoked > lease.ended_ms:
            report.violations.append(
                f"{record['container']}: {record['token']} used at {invoked}, after its lease ended at {lease.ended_ms}"
            )
        if invoked - lease.granted_ms > cap_ms:
            report.violations.append(f"{record['container']}: {record['token']} used {invoked - lease.granted_ms} ms after its grant")
    if "acquire" in pending:
        if records[-1] is pending["acquire"]:
            report.unresolved_killed += 1  # the process died waiting (killed): its ticket expires
        else:
            report.violations.append(f"pid {pending['acquire']['pid']}: an acquire at {pending['acquire'].get('t')} never got an outcome")


def _check_exclusive_use(clients: list[list[dict[str, Any]]], report: Report) -> None:
    """No two tokens use one container at overlapping times (intervals measured on Redis time)."""
    spans: dict[str, dict[str, list[int]]] = defaultdict(dict)
    for records in clients:
        for record in records:
            if record["op"] != "use" or record["phase"] != "ok":
                continue
            # When the container said when it served the call, that moment; else the measured interval.
            start, end = (record["served_t"],) * 2 if "served_t" in record else (record.get("invoked_t"), record.get("t"))
            if start is not None and end is not None:
                span = spans[record["container"]].setdefault(record["token"], [start, end])
                span[0], span[1] = min(span[0], start), max(span[1], end)
    for container, by_token in spans.items():
        ordered = sorted(by_token.items(), key=lambda item: item[1][0])
        for (first, (_, end)), (second, (start, _)) in itertools.pairwise(ordered):
            if start < end:
                report.violations.append(f"{container}: {second} used it from {start} while {first} still used it until {end}")
