"""The history checker places wall-clock readings on the monotonic clock across a step of the
machine's wall clock (one CI run's clock moved 12 s mid-run, and one offset for the whole run
made every lease on one side of the step look served before its grant)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from cinnamon_pool.keys import PoolKeys
from tests.faults.checker import check
from tests.faults.clock import Clock, steps
from tests.faults.history import StreamTail
from tests.soak.verdict import clock_steps

WALL_AHEAD = 1_700_000_000_000.0  # wall ms minus monotonic ms before the step
STEP_AT = 1_000_600.0  # monotonic ms
LEASES = 40


def wall(mono: float, step_ms: float) -> int:
    return int(mono + WALL_AHEAD + (step_ms if mono >= STEP_AT else 0))


def write(path: Path, lines: list[dict[str, Any]]) -> None:
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def lease_history(directory: Path, step_ms: float, early_use_ms: float = 0.0) -> None:
    """40 leases one after another on two containers, 30 ms apart, each with one use, as the
    clients, the stream tail and the containers record them; the wall clock steps by
    ``step_ms`` at STEP_AT. ``early_use_ms``: the lease that starts right after the step is
    also used by its token that long before its grant (a violation)."""
    client: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    served: list[dict[str, Any]] = []

    def line(op: str, phase: str, at: float, name: str = "", token: str = "", **extra: Any) -> None:
        client.append({"op": op, "phase": phase, "t": wall(at, step_ms), "mono": at, "pid": 1, "container": name, "token": token, **extra})

    def event(kind: str, at: float, name: str, token: str, **extra: Any) -> None:
        events.append(
            {"kind": kind, "name": name, "token": token, "at_ms": wall(at, step_ms), "after_mono": at - 2, "before_mono": at + 3, **extra}
        )

    for number in range(LEASES):
        start, name, token = 1_000_000.0 + 30 * number, f"c{number % 2}", f"e:{number}:x"
        line("acquire", "invoke", start)
        event("granted", start + 2, name, token, ticket="")
        line("acquire", "ok", start + 4, name, token, invoked_t=wall(start, step_ms))
        line("use", "invoke", start + 6, name, token)
        served.append({"container": name, "token": token, "tool": "browser_navigate", "start": start + 8, "end": start + 9})
        line("use", "ok", start + 10, name, token, invoked_t=wall(start + 6, step_ms), served_t=wall(start + 8, step_ms))
        line("release", "invoke", start + 12, name, token)
        event("released", start + 14, name, token, duration_ms=12)
        line("release", "ok", start + 16, name, token, invoked_t=wall(start + 12, step_ms))
        if early_use_ms and STEP_AT <= start < STEP_AT + 30:
            served.append(
                {
                    "container": name,
                    "token": token,
                    "tool": "browser_click",
                    "start": start + 2 - early_use_ms,
                    "end": start + 2 - early_use_ms,
                }
            )
    write(directory / "client-1.jsonl", client)
    write(directory / "events.jsonl", events)
    write(directory / "served" / "served-c-1.jsonl", served)


@pytest.mark.parametrize("step_ms", [0, 12_000, -12_000, 500, -500])
def test_a_history_made_across_a_wall_clock_step_passes(tmp_path: Path, step_ms: float) -> None:
    lease_history(tmp_path, step_ms)
    report = check(tmp_path, 60_000)
    assert report.violations == [] and report.served == LEASES and report.grants == LEASES


@pytest.mark.parametrize("step_ms", [12_000, -12_000])
def test_a_use_before_its_grant_right_after_the_step_is_still_caught(tmp_path: Path, step_ms: float) -> None:
    lease_history(tmp_path, step_ms, early_use_ms=1)
    violations = check(tmp_path, 60_000).violations
    assert len(violations) == 1 and "before its grant" in violations[0], violations


def test_a_reading_is_placed_on_its_own_side_of_a_step() -> None:
    forward = Clock.of([{"t": wall(mono, 12_000), "mono": mono} for mono in range(1_000_000, 1_001_200, 10)])
    assert forward.to_mono(wall(STEP_AT + 5, 12_000)) == STEP_AT + 5, "a step forward: its nearest wall readings are on its side"
    assert forward.to_mono(wall(STEP_AT - 5, 12_000)) == STEP_AT - 5
    back = Clock.of([{"t": wall(mono, -12_000), "mono": mono} for mono in range(1_000_000, 1_013_000, 10)])
    repeated = wall(STEP_AT - 300, -12_000)  # read 300 ms before the step back, and again 11.7 s after it
    assert back.to_mono(repeated, after=STEP_AT - 310, before=STEP_AT - 290) == STEP_AT - 300
    assert back.to_mono(repeated, after=STEP_AT + 11_690, before=STEP_AT + 11_710) == STEP_AT + 11_700, "its bounds tell the sides apart"


def test_the_stream_tail_bounds_each_new_entry_by_its_reads(tmp_path: Path, redis_server: str, pool_name: str) -> None:
    """Against the real server (the tail follows restarts by INFO's run id)."""
    writer = redis.Redis.from_url(redis_server)
    tail = StreamTail(redis_server, pool_name, tmp_path)
    with tail:
        writer.xadd(PoolKeys(pool_name).events, {"kind": "granted", "at_ms": "1"})
        writer.xadd(PoolKeys(pool_name).events, {"kind": "released", "at_ms": "2"})
        deadline = time.monotonic() + 10
        while len((tmp_path / "events.jsonl").read_text().splitlines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    entries = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert tail.after is not None and all(tail.after <= entry["after_mono"] <= entry["before_mono"] for entry in entries), entries


def test_a_step_is_found_and_a_process_stopped_between_its_two_readings_is_not_one(tmp_path: Path) -> None:
    samples: list[dict[str, Any]] = [
        {"t": wall(mono, -12_000), "mono": mono, "job": "early" if mono < 1_000_300 else "late"} for mono in range(1_000_000, 1_001_200, 10)
    ]
    samples[30]["mono"] += 5_000  # stopped 5 s between reading Redis time and the monotonic clock
    assert steps(samples) == [(STEP_AT, -12_000)]
    samples[30]["mono"] -= 5_000
    assert steps([sample for sample in samples if sample["mono"] < STEP_AT]) == [], "one clock: no step"
    spanning = {"t": wall(1_000_250, -12_000), "mono": 1_000_250, "job": "spanning"}
    after = {"t": wall(1_000_700, -12_000), "mono": 1_000_700, "job": "spanning"}
    write(tmp_path / "client-1.jsonl", [*samples, spanning, after])
    (found,) = clock_steps(tmp_path, 4_000)
    assert (found["fault"], found["mono"], found["end_mono"], found["size_ms"]) == ("clock-step", STEP_AT, STEP_AT + 4_000, -12_000)
    assert found["jobs"] == ["late", "spanning"], "the jobs in flight at the step are hit by it"
