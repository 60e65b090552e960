"""The history checker catches each violation it is meant to catch, and passes a clean history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from cinnamon_pool.model import Holder
from cinnamon_pool.tokens import fingerprint
from tests.faults.checker import check
from tests.faults.history import ClientHistory
from tests.lease_helpers import store_with

CAP_MS = 60_000


def write(path: Path, lines: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def granted(name: str, token: str, at: int, ticket: str = "") -> dict[str, Any]:
    return {"kind": "granted", "name": name, "token": token, "at_ms": at, "ticket": ticket}


def released(name: str, token: str, at: int, duration: int = 10) -> dict[str, Any]:
    return {"kind": "released", "name": name, "token": token, "at_ms": at, "duration_ms": duration}


def use(pid: int, name: str, token: str, start: int, end: int) -> list[dict[str, Any]]:
    base = {"op": "use", "pid": pid, "container": name, "token": token}
    return [{**base, "phase": "invoke", "t": start}, {**base, "phase": "ok", "t": end, "invoked_t": start}]


def fault(kind: str, at: float, until: float | None = None, pids: list[int] | None = None) -> dict[str, Any]:
    return {"t": at, "mono": at, "end_mono": at if until is None else until, "fault": kind, "target": "", "pids": pids or [], "jobs": []}


def served(container: str, token: str, start: float, end: float) -> dict[str, Any]:
    """One tools/call as fake-mcp records it (monotonic ms)."""
    return {"container": container, "token": token, "tool": "browser_navigate", "start": start, "end": end}


def acquired(pid: int, name: str, token: str, at: float) -> list[dict[str, Any]]:
    base = {"op": "acquire", "pid": pid}
    return [{**base, "phase": "invoke", "t": at, "mono": at, "container": "", "token": ""},
            {**base, "phase": "ok", "t": at + 1, "mono": at + 1, "container": name, "token": token}]  # fmt: skip


def write_served(directory: Path, lines: list[dict[str, Any]]) -> None:
    (directory / "served").mkdir(exist_ok=True)
    write(directory / "served" / "served-abc-1.jsonl", lines)


def test_the_containers_record_passes_a_clean_history_and_ignores_the_pools_own_calls(tmp_path: Path) -> None:
    write(tmp_path / "client-1.jsonl", [*acquired(1, "c1", "e:1:a", 100), *acquired(1, "c1", "e:2:b", 300)])
    write_served(tmp_path, [served("abc", "", 50, 400), served("abc", "e:1:a", 110, 120), served("abc", "e:1:a", 190, 200),
                            served("abc", "e:2:b", 310, 320)])  # fmt: skip
    report = check(tmp_path, CAP_MS)
    assert report.violations == [] and report.served == 3


def test_an_overlap_across_an_epoch_change_is_caught_from_the_containers_record(tmp_path: Path) -> None:
    """Redis restarted empty between the grants: the stream shows two epochs and no overlap, the
    container shows the old holder still at work after the new one began."""
    write(
        tmp_path / "events.jsonl",
        [granted("c1", "old:1:a", 100), {"kind": "stream_restarted", "at_ms": 250}, granted("c1", "new:1:b", 300)],
    )
    write(tmp_path / "client-1.jsonl", [*acquired(1, "c1", "old:1:a", 99)])
    write(tmp_path / "client-2.jsonl", [*acquired(2, "c1", "new:1:b", 299)])
    write_served(tmp_path, [served("abc", "old:1:a", 110, 120), served("abc", "new:1:b", 310, 320), served("abc", "old:1:a", 330, 340)])
    violations = check(tmp_path, CAP_MS).violations
    assert "abc: served new:1:b from 310 while it still served old:1:a until 340 (the containers' own record)" in violations, violations


def test_a_use_by_a_token_never_granted_is_caught(tmp_path: Path) -> None:
    write(tmp_path / "client-1.jsonl", acquired(1, "c1", "e:1:a", 100))
    write_served(tmp_path, [served("abc", "e:1:a", 110, 120), served("abc", "e:9:forged", 130, 140)])
    assert any("e:9:forged, a token never granted" in v for v in check(tmp_path, CAP_MS).violations)


@pytest.mark.parametrize("outage", ["restart-redis", "failover-redis", "partition-gateway"])
def test_a_use_served_during_a_redis_outage_is_caught_but_not_one_checked_just_before(tmp_path: Path, outage: str) -> None:
    """The gateway checks every token in Redis: while it cannot reach Redis, nothing is served."""
    write(tmp_path / "client-1.jsonl", acquired(1, "c1", "e:1:a", 100))
    write(tmp_path / "faults.jsonl", [fault(outage, 1000, until=3000)])
    write_served(tmp_path, [served("abc", "e:1:a", 1100, 1101)])  # in flight when Redis went down: allowed
    assert check(tmp_path, CAP_MS).violations == []
    write_served(tmp_path, [served("abc", "e:1:a", 2000, 2001)])
    assert any("while Redis was out of the gateway's reach (1000-3000)" in v for v in check(tmp_path, CAP_MS).violations)


def test_a_partition_of_the_workers_is_no_outage_for_the_gateway(tmp_path: Path) -> None:
    """Cut off from Redis, a job fences itself; its lease still holds, and the gateway serves it."""
    write(tmp_path / "client-1.jsonl", acquired(1, "c1", "e:1:a", 100))
    write(tmp_path / "faults.jsonl", [fault("partition-workers", 1000, until=3000)])
    write_served(tmp_path, [served("abc", "e:1:a", 2000, 2001)])
    assert check(tmp_path, CAP_MS).violations == []


def test_a_use_whose_grant_the_stream_lost_is_checked_against_the_clients_own_grant(tmp_path: Path) -> None:
    """Redis restarted and the copied stream lost the last grants: the use is still judged."""
    write(tmp_path / "client-1.jsonl", [*acquired(1, "c1", "e:1:a", 100), *use(1, "c1", "e:1:a", 200, 210)])
    assert check(tmp_path, CAP_MS).violations == []
    write(tmp_path / "client-1.jsonl", [*acquired(1, "c1", "e:1:a", 100), *use(1, "c1", "e:1:a", CAP_MS + 200, CAP_MS + 210)])
    assert any(f"used {CAP_MS + 100} ms after its grant" in v for v in check(tmp_path, CAP_MS).violations)
    write(tmp_path / "client-1.jsonl", use(1, "c1", "e:1:a", 200, 210))  # no grant anywhere
    assert any("never granted to it" in v for v in check(tmp_path, CAP_MS).violations)


def test_a_clean_handoff_history_passes(tmp_path: Path) -> None:
    write(
        tmp_path / "events.jsonl",
        [
            granted("c1", "e:1:a", 100),
            {"kind": "waiting", "ticket": "t2", "at_ms": 110},
            released("c1", "e:1:a", 200),
            granted("c1", "e:2:b", 200, ticket="t2"),
            released("c1", "e:2:b", 300),
        ],
    )
    write(tmp_path / "client-1.jsonl", use(1, "c1", "e:1:a", 120, 190))
    write(tmp_path / "client-2.jsonl", use(2, "c1", "e:2:b", 210, 290))
    report = check(tmp_path, CAP_MS)
    assert report.violations == []
    assert (report.grants, report.uses, report.max_handoff_gap_ms) == (2, 2, 0)


def test_an_overlapping_grant_is_caught(tmp_path: Path) -> None:
    write(tmp_path / "events.jsonl", [granted("c1", "e:1:a", 100), granted("c1", "e:2:b", 150)])
    assert any("while e:1:a held it" in v for v in check(tmp_path, CAP_MS).violations)


def test_barging_past_a_live_waiter_is_caught_but_not_past_one_that_left(tmp_path: Path) -> None:
    waiting = [{"kind": "waiting", "ticket": "t1", "at_ms": 90}, {"kind": "waiting", "ticket": "t2", "at_ms": 95}]
    write(tmp_path / "events.jsonl", [*waiting, granted("c1", "e:1:a", 100, ticket="t2")])
    assert any(v.startswith("FIFO") for v in check(tmp_path, CAP_MS).violations)
    gone = {"kind": "waiter_gone", "ticket": "t1", "at_ms": 97}
    write(tmp_path / "events.jsonl", [*waiting, gone, granted("c1", "e:1:a", 100, ticket="t2")])
    assert check(tmp_path, CAP_MS).violations == []


def test_a_use_after_expiry_and_concurrent_uses_are_caught(tmp_path: Path) -> None:
    write(
        tmp_path / "events.jsonl",
        [granted("c1", "e:1:a", 100), {"kind": "revoked", "name": "c1", "token": "e:1:a", "at_ms": 200}, granted("c1", "e:2:b", 250)],
    )
    write(tmp_path / "client-1.jsonl", use(1, "c1", "e:1:a", 260, 270))  # woke up after its lease ended
    write(tmp_path / "client-2.jsonl", use(2, "c1", "e:2:b", 255, 300))
    violations = check(tmp_path, CAP_MS).violations
    assert any("after its lease ended" in v for v in violations)
    assert any("still used it" in v for v in violations)


def test_a_release_past_the_cap_and_an_unanswered_acquire_are_caught(tmp_path: Path) -> None:
    write(tmp_path / "events.jsonl", [granted("c1", "e:1:a", 0), released("c1", "e:1:a", CAP_MS + 5, duration=CAP_MS + 5)])
    acquire = {"op": "acquire", "pid": 3, "container": "", "token": ""}
    write(tmp_path / "client-3.jsonl", [{**acquire, "phase": "invoke", "t": 1}, {**acquire, "op": "release", "phase": "ok", "t": 2}])
    violations = check(tmp_path, CAP_MS).violations
    assert any("past the cap" in v for v in violations)
    assert any("never got an outcome" in v for v in violations)
    write(tmp_path / "client-3.jsonl", [{**acquire, "phase": "invoke", "t": 1}])  # silent since: nothing explains it
    assert any("never got an outcome (no recorded fault killed its process)" in v for v in check(tmp_path, CAP_MS).violations)
    write(tmp_path / "faults.jsonl", [fault("kill-horse", 5, pids=[4])])  # another process's kill explains nothing
    assert any("never got an outcome" in v for v in check(tmp_path, CAP_MS).violations)
    write(tmp_path / "faults.jsonl", [fault("kill-horse", 5, pids=[3])])  # killed while waiting: explained
    report = check(tmp_path, CAP_MS)
    assert report.unresolved_killed == 1 and not any("outcome" in v for v in report.violations)


def test_a_kill_that_struck_during_the_acquire_explains_it_though_the_fault_began_before(tmp_path: Path) -> None:
    """The three records of the CI run that failed: the injector began choosing its victim 50 ms
    before that horse invoked its acquire, and killed it 63 ms after."""
    invoke = {"op": "acquire", "phase": "invoke", "t": 1_700_000_914_780, "mono": 914780.927, "pid": 12112, "container": "", "token": ""}
    write(tmp_path / "client-12112.jsonl", [invoke])
    kill = {**fault("kill-horse", 914731.217, until=914844.132, pids=[12112]), "t": 1_700_000_914_731}
    write(tmp_path / "faults.jsonl", [kill])  # as written before kills carried the moment they struck
    report = check(tmp_path, CAP_MS)
    assert report.unresolved_killed == 1 and report.violations == [], report.violations
    write(tmp_path / "faults.jsonl", [{**kill, "killed_mono": 914843.9}])
    assert check(tmp_path, CAP_MS).violations == []
    write(tmp_path / "faults.jsonl", [{**kill, "killed_mono": 914760.0}])  # struck before the invoke: the process went on
    assert any("never got an outcome" in v for v in check(tmp_path, CAP_MS).violations)


def test_a_client_on_connect_killed_during_its_first_call_died_waiting_for_its_acquire(tmp_path: Path) -> None:
    """fc20's HA soak: a session's first tool call is invoked before the answer names the lease
    (no token yet); killed then, the acquire is unanswered but its process did not go on."""
    acquire = {"op": "acquire", "phase": "invoke", "t": 1, "mono": 1.0, "pid": 369, "container": "", "token": ""}
    first_call = {**acquire, "op": "use", "t": 2, "mono": 2.0}
    write(tmp_path / "client-369.jsonl", [acquire, first_call])
    write(tmp_path / "faults.jsonl", [fault("kill-client", 5, pids=[369])])
    report = check(tmp_path, CAP_MS)
    assert report.unresolved_killed == 1 and report.violations == [], report.violations
    write(tmp_path / "client-369.jsonl", [acquire, first_call, {**first_call, "phase": "ok", "token": "e:1:a", "t": 3, "mono": 3.0}])
    assert any("its process went on after it" in v for v in check(tmp_path, CAP_MS).violations)


def test_an_epoch_change_ends_every_lease_of_the_old_epoch(tmp_path: Path) -> None:
    write(tmp_path / "events.jsonl", [granted("c1", "old:1:a", 100), granted("c1", "new:1:b", 500)])
    report = check(tmp_path, CAP_MS)
    assert report.violations == [] and report.epochs == 2


def test_the_recorder_writes_what_the_checker_reads(tmp_path: Path) -> None:
    client = fakeredis.FakeRedis()
    store = store_with(client, 1)
    history = ClientHistory(tmp_path, client)
    grant = history.around("acquire", lambda: store.acquire(Holder("history"), timeout_s=1))
    history.around("use", lambda: None, grant.name, grant.token)
    history.around("release", lambda: store.release(grant.name, grant.token), grant.name, grant.token)
    lines = [json.loads(line) for line in next(tmp_path.glob("client-*.jsonl")).read_text().splitlines()]
    assert [(line["op"], line["phase"]) for line in lines] == [
        ("acquire", "invoke"),
        ("acquire", "ok"),
        ("use", "invoke"),
        ("use", "ok"),
        ("release", "invoke"),
        ("release", "ok"),
    ]
    assert lines[1]["token"] == fingerprint(grant.token), "the history names a lease as the pool does: by its fingerprint"
    assert lines[3]["invoked_t"] == lines[2]["t"]


def test_the_served_moment_decides_for_a_holder_stopped_before_it_recorded_its_outcome(tmp_path: Path) -> None:
    events = [granted("c1", "e:1:a", 100), {"kind": "revoked", "name": "c1", "token": "e:1:a", "at_ms": 200}, granted("c1", "e:2:b", 250)]
    write(tmp_path / "events.jsonl", events)
    stopped = use(1, "c1", "e:1:a", 110, 400)  # stopped after its call, recorded the outcome on waking
    stopped[1]["served_t"] = 115
    write(tmp_path / "client-1.jsonl", stopped)
    write(tmp_path / "client-2.jsonl", use(2, "c1", "e:2:b", 260, 300))
    assert check(tmp_path, CAP_MS).violations == [], "served at 115, inside its own lease"
    stopped[1]["served_t"] = 270  # the container served it while b held the lease
    write(tmp_path / "client-1.jsonl", stopped)
    violations = check(tmp_path, CAP_MS).violations
    assert any("after its lease ended" in v for v in violations) and any("still used it" in v for v in violations)


def test_each_use_the_containers_served_is_checked_against_its_own_lease_whoever_logged_it(tmp_path: Path) -> None:
    """No client logged these uses (their processes died, say): the containers' record alone
    shows a use before its token's grant, one after its lease ended (a stale token), and one
    under a token never granted; uses inside their lease pass."""
    write(
        tmp_path / "events.jsonl",
        [granted("c1", "e:1:a", 100), released("c1", "e:1:a", 200), granted("c1", "e:2:b", 300), released("c1", "e:2:b", 400)],
    )
    inside = [served("abc", "e:1:a", 110, 120), served("abc", "e:2:b", 310, 390)]
    write_served(tmp_path, [*inside, served("abc", "e:2:b", 250, 260), served("abc", "e:1:a", 450, 460), served("abc", "x:9:z", 470, 480)])
    violations = check(tmp_path, CAP_MS).violations
    assert violations == [
        "abc: served e:2:b at 250, before its grant at 300",
        "abc: served e:1:a at 450, after its lease ended at 200",
        "abc: served browser_navigate at 470 to x:9:z, a token never granted",
        "abc: served e:2:b from 250 while it still served e:1:a until 460 (the containers' own record)",
    ], violations
    write_served(tmp_path, inside)
    assert check(tmp_path, CAP_MS).violations == []
