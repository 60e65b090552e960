"""A history of the lease protocol as clients and server saw it, and a checker of its invariants.

Three files in one directory make a history:

- ``client-<pid>.jsonl``: what each client process did, one line per phase of an operation,
  ``{"op", "phase", "t", "pid", "container", "token", "detail"}`` (``token``: the lease token's
  fingerprint, the name the pool's events and the containers give it). ``op`` is acquire, renew,
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
- ``faults.jsonl``: what the fault injector did, ``{"t", "mono", "killed_mono", "end_mono", "fault",
  "target", "pids", "jobs"}``: when it began, struck and ended (host monotonic ms), the processes it killed or
  stopped, and the rq jobs it hit.
- ``served/served-<container>-<pid>.jsonl`` (optional): what each container itself served,
  written by fake-mcp before it answers (``FAKE_MCP_RECORD_DIR``): ``{"container", "token",
  "tool", "start", "end"}`` on the monotonic clock the containers share with the host. This is
  the ground truth: it does not come from the Lua scripts under test.

Every client line also carries ``mono`` (host monotonic ms, always there, even while Redis is
away) and ``job`` (the rq job id, in a work horse).

:func:`check` reads them back and returns the violations (an empty list is a pass):

- from the containers' own records: no two lease tokens use one container at once, ever, epochs
  or not (a token's span runs from its first to its last use there); no use by a token that was
  never granted; no use served while the pool's Redis was down (the gateway must refuse what it
  cannot check);
- from the event stream: no overlapping grants per container within an epoch, FIFO among live
  waiters, no lease past the cap; an epoch change ends the old epoch's leases at that moment and
  is then checked like any other (a later use of an old token is a use after its lease ended);
- from the clients: uses only inside their own lease (its grant taken from the stream, or from
  the client's own record when the stream lost it), every acquire resolved, or its process
  killed by a recorded fault.

It also measures the idle gap between a release and the next grant while jobs wait.
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
from cinnamon_pool.tokens import fingerprint

T = TypeVar("T")
REJECTIONS = ("LeaseLost", "LeaseNotOwned", "PoolExhausted", "PoolNotReady")


def redis_ms(client: redis.Redis) -> int | None:
    """Redis TIME in ms; None when Redis does not answer (the checker then skips timing)."""
    try:
        seconds, micros = client.time()
    except redis.RedisError:
        return None
    return int(seconds) * 1000 + int(micros) // 1000


def monotonic_ms() -> float:
    """The kernel's monotonic clock in ms: one clock for the host, its processes and containers."""
    return round(time.monotonic() * 1000, 3)


def current_job_id() -> str:
    """The rq job this process runs (in a work horse), else ""."""
    from rq import get_current_job

    try:
        job = get_current_job()
    except Exception:  # no rq connection in this process: not a job
        return ""
    return job.id if job is not None else ""


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
        line: dict[str, Any] = {
            "op": op, "phase": phase, "t": t, "mono": monotonic_ms(), "pid": self._pid, "container": container, "token": token,
        }  # fmt: skip
        job = current_job_id()
        if job:
            line["job"] = job
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
        (host clock, ms), which pins a use to a moment instead of the measured interval.
        ``token`` is the holder's own: the history names it by its fingerprint, as the pool's
        events and the containers' records do."""
        token = fingerprint(token) if token else ""
        invoked = self.record(op, "invoke", container, token)
        try:
            result = call()
        except Exception as error:
            kind = type(error).__name__
            phase = "fail" if kind in REJECTIONS else "unknown"
            self.record(op, phase, container, token, f"{kind}: {error}", invoked)
            raise
        name, granted = getattr(result, "name", container), getattr(result, "token", None)
        granted = fingerprint(granted) if isinstance(granted, str) else token
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
    """Copies the pool's event stream to ``events.jsonl`` as it grows, in a thread. When another
    server answers (Redis restarted, or Sentinel promoted a replica), it goes on where it was if
    that server's stream has the last entry copied (a replica's copy), else it starts over from
    the new stream's beginning after a ``stream_restarted`` line (Redis came back empty).
    ``source``: the Redis URL, or a function that makes the client (one that follows Sentinel)."""

    def __init__(self, source: str | Callable[[], redis.Redis], pool: str, directory: Path) -> None:
        self.source, self.key, self.path = source, PoolKeys(pool).events, directory / "events.jsonl"
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
        if isinstance(self.source, str):
            client = redis.Redis.from_url(self.source, socket_timeout=5, decode_responses=True)
        else:
            client = self.source()
        last, server = "0-0", ""
        with self.path.open("a") as out:
            while not self.stop.is_set():
                try:
                    run_id = client.info("server")["run_id"]
                    if server and run_id != server and not (last != "0-0" and client.xrange(self.key, last, last)):
                        last = "0-0"  # a new stream (Redis restarted empty): from its beginning
                        out.write(json.dumps({"kind": "stream_restarted", "at_ms": redis_ms(client) or 0}) + "\n")
                    server = run_id
                    for _, entries in client.xread({self.key: last}, count=1000, block=200) or []:
                        for entry_id, fields in entries:
                            out.write(json.dumps({"id": entry_id, **fields}) + "\n")
                            last = entry_id
                    out.flush()
                except redis.RedisError:
                    time.sleep(0.2)


def record_fault(
    directory: Path,
    client: redis.Redis,
    fault: str,
    pids: list[int] | None = None,
    *,
    target: str = "",
    jobs: list[str] | None = None,
    began_mono: float | None = None,
    killed_mono: float | None = None,
) -> None:
    """One line for one injected fault, written once it is done: when it began (``began_mono``,
    default now), when its signal struck (``killed_mono``, for kills: the moment that decides
    what the killed process could still have started) and when it ended, what it hit."""
    end = monotonic_ms()
    line = {
        "t": redis_ms(client) or int(time.time() * 1000),
        "mono": began_mono if began_mono is not None else end,
        "killed_mono": killed_mono if killed_mono is not None else end,
        "end_mono": end,
        "fault": fault,
        "target": target,
        "pids": pids or [],
        "jobs": jobs or [],
    }
    with (directory / "faults.jsonl").open("a") as out:
        out.write(json.dumps(line) + "\n")


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
    served: int = 0  # uses the containers themselves recorded (the ground truth), 0 without records
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
            "served_by_containers": self.served,
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
    granted_ms: float
    ended_ms: float | None = None


OUTAGES = {"restart-redis", "failover-redis"}  # faults during which the pool's Redis does not answer
OUTAGE_GRACE_MS = 250.0  # a request the gateway checked just before Redis went down may still be served


def check(directory: Path, max_lease_ms: int) -> Report:
    """Verify the lease invariants over a history directory (see the module docstring)."""
    report = Report()
    events = list(_lines(directory / "events.jsonl")) if (directory / "events.jsonl").exists() else []
    clients = [list(_lines(path)) for path in sorted(directory.glob("client-*.jsonl"))]
    faults = list(_lines(directory / "faults.jsonl")) if (directory / "faults.jsonl").exists() else []
    served = [line for path in sorted(directory.glob("served/served-*.jsonl")) for line in _lines(path)]
    offset = _redis_minus_monotonic(clients)
    for event in events:
        if "at_ms" in event:
            event["at_ms"] = int(event["at_ms"]) - offset
    leases = _check_server(events, max_lease_ms, report)
    for records in clients:
        _check_client(records, leases, max_lease_ms, faults, offset, report)
    _check_exclusive_use(clients, offset, report)
    _check_served(served, {*leases, *_granted_to_clients(clients)}, faults, report)
    return report


def _redis_minus_monotonic(clients: list[list[dict[str, Any]]]) -> float:
    """How far Redis time (ms) runs ahead of the host's monotonic clock: the median over client
    lines that read both (one host; 0 for histories with Redis time only)."""
    differences = sorted(
        line["t"] - line["mono"] for records in clients for line in records if line.get("t") is not None and "mono" in line
    )
    return differences[len(differences) // 2] if differences else 0.0


def _mono(line: dict[str, Any], key: str, offset: float) -> float | None:
    """``line[key]`` on the monotonic clock: ``mono`` as written, a Redis-time field converted."""
    if key == "t" and "mono" in line:
        return float(line["mono"])
    value = line.get(key)
    return None if value is None else float(value) - offset


def _granted_to_clients(clients: list[list[dict[str, Any]]]) -> set[str]:
    return {line["token"] for records in clients for line in records if line["op"] == "acquire" and line["phase"] == "ok"}


def _check_served(served: list[dict[str, Any]], granted: set[str], faults: list[dict[str, Any]], report: Report) -> None:
    """The ground truth: on each container, the spans of different tokens never overlap; every
    token was granted; nothing is served while Redis is down. The pool's own calls (readiness
    probe, kept and prepared sessions, canary) carry no token and are not uses."""
    outages = [(float(f["mono"]), float(f.get("end_mono", f["mono"]))) for f in faults if f["fault"] in OUTAGES]
    spans: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for use in served:
        token = use.get("token", "")
        if not token:
            continue
        report.served += 1
        start, end = float(use["start"]), float(use["end"])
        if token not in granted:
            report.violations.append(f"{use['container']}: served {use['tool']} at {start:.0f} to {token}, a token never granted")
        for down, up in outages:
            if down + OUTAGE_GRACE_MS < start < up:
                report.violations.append(
                    f"{use['container']}: served {use['tool']} at {start:.0f} to {token} while Redis was down ({down:.0f}-{up:.0f})"
                )
        span = spans[use["container"]].setdefault(token, [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
    for container, by_token in spans.items():
        ordered = sorted(by_token.items(), key=lambda item: item[1][0])
        for (first, (_, end)), (second, (start, _)) in itertools.pairwise(ordered):
            if start < end:
                report.violations.append(
                    f"{container}: served {second} from {start:.0f} while it still served {first} until {end:.0f} (the containers' own record)"
                )


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


def _check_client(
    records: list[dict[str, Any]], leases: dict[str, _Lease], cap_ms: int, faults: list[dict[str, Any]], offset: float, report: Report
) -> None:
    """Uses happen inside their own lease, before its cap; every acquire gets an outcome, or its
    process was killed by a recorded fault."""
    pending: dict[str, dict[str, Any]] = {}  # op -> its open invoke
    own: dict[str, _Lease] = {}  # this client's grants, for tokens the copied stream lost
    for record in records:
        op, phase = record["op"], record["phase"]
        if op == "acquire":
            report.acquires += phase == "invoke"
        if phase == "invoke":
            pending[op] = record
            continue
        invoke = pending.pop(op, None)
        if op == "acquire" and phase == "ok" and invoke is not None:
            granted = _mono(invoke, "t", offset)
            if granted is not None:  # the grant happened between the invoke and this outcome
                own[record["token"]] = _Lease(record["container"], record["token"], granted)
        if op != "use" or phase != "ok":
            continue
        report.uses += 1
        used = _mono(record, "served_t", offset) if "served_t" in record else _mono(record, "invoked_t", offset)
        if used is None and invoke is not None:
            used = _mono(invoke, "t", offset)
        lease = leases.get(record["token"]) or own.get(record["token"])
        if lease is None or used is None:
            report.violations.append(f"pid {record['pid']}: used {record['container']} under {record['token']}, never granted to it")
            continue
        if used < lease.granted_ms:
            report.violations.append(
                f"{record['container']}: {record['token']} used at {used:.0f}, before its grant at {lease.granted_ms:.0f}"
            )
        if lease.ended_ms is not None and used > lease.ended_ms:
            report.violations.append(
                f"{record['container']}: {record['token']} used at {used:.0f}, after its lease ended at {lease.ended_ms:.0f}"
            )
        if used - lease.granted_ms > cap_ms:
            report.violations.append(f"{record['container']}: {record['token']} used {used - lease.granted_ms:.0f} ms after its grant")
    if "acquire" in pending:
        invoke = pending["acquire"]
        invoked = _mono(invoke, "t", offset)
        kill = next((f for f in faults if invoke["pid"] in f.get("pids", []) and (invoked is None or _struck(f) >= invoked)), None)
        if records[-1] is invoke and kill is not None:
            report.unresolved_killed += 1  # the process died waiting: its ticket expires
        else:
            why = "no recorded fault killed its process" if kill is None else "its process went on after it"
            report.violations.append(f"pid {invoke['pid']}: an acquire at {invoked} never got an outcome ({why})")


def _struck(fault: dict[str, Any]) -> float:
    """When a fault's kill struck: what a process could have started before it was killed is
    explained by it, whenever the injector began choosing its victim (older lines carry only
    ``end_mono``, which is at or after the kill)."""
    return float(fault.get("killed_mono", fault.get("end_mono", fault["mono"])))


def _check_exclusive_use(clients: list[list[dict[str, Any]]], offset: float, report: Report) -> None:
    """No two tokens use one container at overlapping times, as the clients measured them (the
    served moment when the container said it, else the interval around the call)."""
    spans: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for records in clients:
        invokes: dict[str, dict[str, Any]] = {}
        for record in records:
            if record["op"] != "use":
                continue
            if record["phase"] == "invoke":
                invokes[record["token"]] = record
                continue
            if record["phase"] != "ok":
                continue
            if "served_t" in record:
                start = end = _mono(record, "served_t", offset)
            else:
                invoke = invokes.get(record["token"])
                start = _mono(invoke, "t", offset) if invoke is not None else _mono(record, "invoked_t", offset)
                end = _mono(record, "t", offset)
            if start is not None and end is not None:
                span = spans[record["container"]].setdefault(record["token"], [start, end])
                span[0], span[1] = min(span[0], start), max(span[1], end)
    for container, by_token in spans.items():
        ordered = sorted(by_token.items(), key=lambda item: item[1][0])
        for (first, (_, end)), (second, (start, _)) in itertools.pairwise(ordered):
            if start < end:
                report.violations.append(f"{container}: {second} used it from {start:.0f} while {first} still used it until {end:.0f}")
