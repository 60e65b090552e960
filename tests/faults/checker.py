"""The checker of a lease history (history.py writes it: its files are described there).

:func:`check` reads them back and returns the violations (an empty list is a pass):

- from the containers' own records: no two lease tokens use one container at once, ever, epochs
  or not (a token's span runs from its first to its last use there); every use inside its
  token's lease, from its grant to its end (from the stream, or the client's own grant when the
  stream lost it), whoever made it; no use by a token that was never granted; no use served
  while the pool's Redis was down (the gateway must refuse what it
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

import itertools
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.clock import Clock


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


OUTAGES = {"restart-redis", "failover-redis", "partition-gateway"}  # faults during which the gateway cannot reach Redis
OUTAGE_GRACE_MS = 250.0  # a request the gateway checked just before Redis went down may still be served


def check(directory: Path, max_lease_ms: int) -> Report:
    """Verify the lease invariants over a history directory (see the module docstring)."""
    report = Report()
    events = list(_lines(directory / "events.jsonl")) if (directory / "events.jsonl").exists() else []
    clients = [list(_lines(path)) for path in sorted(directory.glob("client-*.jsonl"))]
    faults = list(_lines(directory / "faults.jsonl")) if (directory / "faults.jsonl").exists() else []
    served = [line for path in sorted(directory.glob("served/served-*.jsonl")) for line in _lines(path)]
    clock = Clock.of(line for records in clients for line in records)
    for event in events:
        if "at_ms" in event:
            bounds = event.get("after_mono"), event.get("before_mono")
            event["at_ms"] = clock.to_mono(float(event["at_ms"]), *bounds, earliest=event.get("kind") == "granted")
    leases = _check_server(events, max_lease_ms, report)
    for records in clients:
        _check_client(records, leases, max_lease_ms, faults, clock, report)
    _check_exclusive_use(clients, clock, report)
    _check_served(served, {**_granted_to_clients(clients, clock), **leases}, faults, report)
    return report


def _mono(line: dict[str, Any], key: str, clock: Clock, after: dict[str, Any] | None = None) -> float | None:
    """``line[key]`` on the monotonic clock: ``mono`` as written, a wall-clock field placed before
    the line was written (and after the line ``after``, its invoke, was)."""
    if key == "t" and "mono" in line:
        return float(line["mono"])
    value = line.get(key)
    if value is None:
        return None
    return clock.to_mono(float(value), None if after is None else after.get("mono"), line.get("mono"))


def _granted_to_clients(clients: list[list[dict[str, Any]]], clock: Clock) -> dict[str, _Lease]:
    """Each client's own grants (from its acquire's invoke on: the grant happened after it), for
    the tokens whose grant the copied stream lost; their end is not known from the clients."""
    grants: dict[str, _Lease] = {}
    for records in clients:
        invoked: float | None = None
        for line in records:
            if line["op"] == "acquire" and line["phase"] == "invoke":
                invoked = _mono(line, "t", clock)
            elif line["op"] == "acquire" and line["phase"] == "ok":
                grants[line["token"]] = _Lease(line["container"], line["token"], invoked if invoked is not None else float("-inf"))
    return grants


def _check_served(served: list[dict[str, Any]], leases: dict[str, _Lease], faults: list[dict[str, Any]], report: Report) -> None:
    """The ground truth: on each container, the spans of different tokens never overlap; every
    use falls inside its token's lease (from its grant to its end, as the stream says, or from the
    client's own grant when the stream lost it), whoever made it; nothing is served while Redis
    is down. The token is the one the gateway forwarded (it replaces any the client sends). The
    pool's own calls (readiness probe, kept and prepared sessions, canary) carry no token."""
    outages = [(float(f["mono"]), float(f.get("end_mono", f["mono"]))) for f in faults if f["fault"] in OUTAGES]
    spans: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for use in served:
        token = use.get("token", "")
        if not token:
            continue
        report.served += 1
        start, end = float(use["start"]), float(use["end"])
        lease = leases.get(token)
        if lease is None:
            report.violations.append(f"{use['container']}: served {use['tool']} at {start:.0f} to {token}, a token never granted")
        elif start < lease.granted_ms:
            report.violations.append(f"{use['container']}: served {token} at {start:.0f}, before its grant at {lease.granted_ms:.0f}")
        elif lease.ended_ms is not None and start > lease.ended_ms:
            report.violations.append(f"{use['container']}: served {token} at {start:.0f}, after its lease ended at {lease.ended_ms:.0f}")
        for down, up in outages:
            if down + OUTAGE_GRACE_MS < start < up:
                report.violations.append(
                    f"{use['container']}: served {use['tool']} at {start:.0f} to {token} while Redis was out of the gateway's reach ({down:.0f}-{up:.0f})"
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
            ended = leases.get(token)
            if ended is not None and ended.ended_ms is None:
                ended.ended_ms = at
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
    records: list[dict[str, Any]], leases: dict[str, _Lease], cap_ms: int, faults: list[dict[str, Any]], clock: Clock, report: Report
) -> None:
    """Uses happen inside their own lease, before its cap; every acquire gets an outcome, or its
    process was killed by a recorded fault."""
    pending: dict[str, dict[str, Any]] = {}  # op -> its open invoke
    by_moment = _invokes_by_moment(records)
    own: dict[str, _Lease] = {}  # this client's grants, for tokens the copied stream lost
    for record in records:
        op, phase = record["op"], record["phase"]
        if op == "acquire":
            report.acquires += phase == "invoke"
        if phase == "invoke":
            pending[op] = record
            continue
        invoke = pending.pop(op, None) or by_moment.get(record.get("invoked_t"))
        if op == "acquire" and phase == "ok" and invoke is not None:
            granted = _mono(invoke, "t", clock)
            if granted is not None:  # the grant happened between the invoke and this outcome
                own[record["token"]] = _Lease(record["container"], record["token"], granted)
        if op != "use" or phase != "ok":
            continue
        report.uses += 1
        if "served_t" in record:
            used = _mono(record, "served_t", clock, after=invoke)
        else:  # when it was invoked: its invoke line's moment, else the outcome's copy of it
            used = _mono(invoke, "t", clock) if invoke is not None else _mono(record, "invoked_t", clock)
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
        invoked = _mono(invoke, "t", clock)
        kill = next((f for f in faults if invoke["pid"] in f.get("pids", []) and (invoked is None or _struck(f) >= invoked)), None)
        later = records[next(i for i, record in enumerate(records) if record is invoke) + 1 :]
        # A session on connect calls its first tool before the answer names its lease: that
        # tokenless use is the acquire still going on, not the process going on after it.
        went_on = [record for record in later if not (record["op"] == "use" and record["phase"] == "invoke" and not record["token"])]
        if not went_on and kill is not None:
            report.unresolved_killed += 1  # the process died waiting: its ticket expires
        else:
            why = "no recorded fault killed its process" if kill is None else "its process went on after it"
            report.violations.append(f"pid {invoke['pid']}: an acquire at {invoked} never got an outcome ({why})")


def _invokes_by_moment(records: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """One client's invoke lines by their Redis time: an outcome's ``invoked_t`` names the line
    of its invoke, whose monotonic moment bounds what the outcome reports (a session's first use
    was invoked by its acquire)."""
    return {line["t"]: line for line in records if line["phase"] == "invoke" and line.get("t") is not None}


def _struck(fault: dict[str, Any]) -> float:
    """When a fault's kill struck: what a process could have started before it was killed is
    explained by it, whenever the injector began choosing its victim (older lines carry only
    ``end_mono``, which is at or after the kill)."""
    return float(fault.get("killed_mono", fault.get("end_mono", fault["mono"])))


def _check_exclusive_use(clients: list[list[dict[str, Any]]], clock: Clock, report: Report) -> None:
    """No two tokens use one container at overlapping times, as the clients measured them (the
    served moment when the container said it, else the interval around the call)."""
    spans: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for records in clients:
        invokes: dict[str, dict[str, Any]] = {}
        by_moment = _invokes_by_moment(records)
        for record in records:
            if record["op"] != "use":
                continue
            if record["phase"] == "invoke":
                invokes[record["token"]] = record
                continue
            if record["phase"] != "ok":
                continue
            invoke = invokes.get(record["token"]) or by_moment.get(record.get("invoked_t"))
            if "served_t" in record:
                start = end = _mono(record, "served_t", clock, after=invoke)
            else:
                start = _mono(invoke, "t", clock) if invoke is not None else _mono(record, "invoked_t", clock)
                end = _mono(record, "t", clock)
            if start is not None and end is not None:
                span = spans[record["container"]].setdefault(record["token"], [start, end])
                span[0], span[1] = min(span[0], start), max(span[1], end)
    for container, by_token in spans.items():
        ordered = sorted(by_token.items(), key=lambda item: item[1][0])
        for (first, (_, end)), (second, (start, _)) in itertools.pairwise(ordered):
            if start < end:
                report.violations.append(f"{container}: {second} used it from {start:.0f} while {first} still used it until {end:.0f}")
