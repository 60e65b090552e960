"""The container rules and the sizing decision as pure functions."""

from __future__ import annotations

from cinnamon_pool.model import ContainerRecord, ContainerState
from cinnamon_pool.supervisor.reconcile import Observation, ScalePolicy, scale
from cinnamon_pool.supervisor.rules import HealthPolicy, Probe, StateChange, judge

POLICY = HealthPolicy(max_memory_mb=400, health_failures=3, health_timeout_s=5)


def rec(slot: int, state: ContainerState = ContainerState.AVAILABLE) -> ContainerRecord:
    return ContainerRecord(f"container-{slot:03d}", f"{slot:064x}", slot, "h", f"http://127.0.0.1:{3000 + slot}/mcp", state)


def test_memory_over_the_limit_drains_once_and_never_touches_a_restarting_one() -> None:
    records = {
        "container-001": rec(1, ContainerState.ALLOCATED),
        "container-002": rec(2, ContainerState.RESTARTING),
        "container-003": rec(3),
    }
    changes, _ = judge(records, {"container-001": 412.0, "container-002": 900.0, "container-003": 399.0}, {}, {}, POLICY)
    assert changes == [StateChange("container-001", ContainerState.DRAINING, "memory 412MB > 400MB")]
    draining = {"container-001": rec(1, ContainerState.DRAINING)}
    assert judge(draining, {"container-001": 500.0}, {}, {}, POLICY)[0] == [], "already draining: no second change"


def test_three_failed_probes_in_a_row_make_it_unhealthy_and_a_success_resets() -> None:
    records = {"container-001": rec(1)}
    failures: dict[str, int] = {}
    fail, ok = Probe(False, 0.01, "ConnectError"), Probe(True, 0.01)
    history = []
    for probe in (fail, fail, ok, fail, fail, fail):
        changes, failures = judge(records, {}, {"container-001": probe}, failures, POLICY)
        history.append([c.state for c in changes])
    assert history == [[], [], [], [], [], [ContainerState.UNHEALTHY]]


def test_no_answer_within_the_timeout_restarts_a_free_container_and_drains_a_leased_one() -> None:
    """The seed: a container that does not answer for 5 s is restarted; as for the memory rule,
    never mid-lease (draining restarts a free one at once, a leased one when released)."""
    records = {"container-001": rec(1), "container-002": rec(2, ContainerState.ALLOCATED), "container-003": rec(3)}
    probes = {
        "container-001": Probe(True, 5.5),
        "container-002": Probe(False, 5.0, "no answer within 5s", timed_out=True),
        "container-003": Probe(True, 0.1),
    }
    changes, _ = judge(records, {}, probes, {}, POLICY)
    assert changes == [
        StateChange("container-001", ContainerState.DRAINING, "no answer to a probe within 5s (answered after 5.5s)"),
        StateChange("container-002", ContainerState.DRAINING, "no answer to a probe within 5s (no answer within 5s)"),
    ], "one late probe is enough, not 3 failures"
    draining = {"container-002": rec(2, ContainerState.DRAINING)}
    assert judge(draining, {}, {"container-002": probes["container-002"]}, {}, POLICY)[0] == [], "already draining"


def test_when_every_probe_of_a_round_is_slow_the_host_is_busy_and_nothing_is_replaced_at_once() -> None:
    records = {f"container-00{i}": rec(i) for i in (1, 2, 3)}
    slow = {name: Probe(True, 5.6) for name in records}
    failures: dict[str, int] = {}
    rounds = []
    for _ in range(3):
        changes, failures = judge(records, {}, slow, failures, POLICY)
        rounds.append(changes)
    assert rounds[0] == [] and rounds[1] == [], "one busy moment of the supervisor's host replaces nothing"
    assert {c.name for c in rounds[2]} == set(records), "slow round after slow round counts as failures"
    assert all(c.reason.startswith("3 failed probes (the last took 5.6s") for c in rounds[2]), rounds[2]
    one_slow = {"container-001": Probe(True, 5.6), "container-002": Probe(True, 0.1), "container-003": Probe(True, 0.1)}
    changes, _ = judge(records, {}, one_slow, {}, POLICY)
    assert [c.name for c in changes] == ["container-001"], "one slow container among quick ones is its own problem"


def observation(records: list[ContainerRecord], size: int, draining: bool = False) -> Observation:
    return Observation("qa", "h", [], {r.name: r for r in records}, {}, size, draining)


SCALE = ScalePolicy(min_size=1, max_size=4, idle_shrink_s=300, cooldown_s=30)


def test_grow_by_the_waiting_acquirers_up_to_max_and_not_within_the_cool_down() -> None:
    obs = observation([rec(1, ContainerState.ALLOCATED)], 1)
    assert scale(1, obs, SCALE, waiting=2, free_since_ms={}, now_ms=0, since_last_change_s=60) == (3, "2 job(s) waiting and none free")
    assert scale(1, obs, SCALE, waiting=9, free_since_ms={}, now_ms=0, since_last_change_s=60)[0] == 4
    assert scale(1, obs, SCALE, waiting=2, free_since_ms={}, now_ms=0, since_last_change_s=10) == (1, "")
    assert scale(1, obs, SCALE, waiting=2, free_since_ms={"container-001": 0}, now_ms=0, since_last_change_s=60) == (1, ""), (
        "something is free"
    )


def test_shrink_the_highest_idle_slot_above_min_only() -> None:
    records = [rec(1), rec(2)]
    obs = observation(records, 2)
    idle = {"container-001": 0, "container-002": 0}
    assert scale(2, obs, SCALE, 0, idle, now_ms=299_000, since_last_change_s=60) == (2, "")
    assert scale(2, obs, SCALE, 0, idle, now_ms=300_000, since_last_change_s=60) == (1, "container-002 idle for 300 s")
    assert scale(2, obs, SCALE, 0, {"container-001": 0}, now_ms=400_000, since_last_change_s=60) == (2, ""), "slot 2 is leased"
    assert scale(1, observation([rec(1)], 1), SCALE, 0, {"container-001": 0}, now_ms=10**9, since_last_change_s=60) == (1, ""), "at min"


def test_records_the_scripts_could_not_have_written_are_restarted() -> None:
    from cinnamon_pool.supervisor.rules import find_inconsistent

    records = {r.name: r for r in [rec(1), rec(2, ContainerState.ALLOCATED), rec(3), rec(4, ContainerState.ALLOCATED)]}
    changes = find_inconsistent(records, free={"container-003"}, leased={"container-004"}, epoch="e")
    assert [(c.name, c.reason) for c in changes] == [
        ("container-001", "available, but not in the free set"),
        ("container-002", "allocated, but no lease holds it"),
    ]
    assert all(c.state is ContainerState.RESTARTING for c in changes)
    gone = find_inconsistent(records, free={"container-001", "container-003"}, leased={"container-002", "container-004"}, epoch=None)
    assert len(gone) == 4, "without the pool's epoch every record restarts and re-registers"
