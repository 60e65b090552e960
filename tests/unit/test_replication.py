"""Noticing a failover that lost writes, from Redis's replication lineage."""

from __future__ import annotations

from cinnamon_pool.lease.replication import Lineage, lost_writes

OLD = Lineage("a" * 40, 1000, "0" * 40, -1)


def test_the_same_history_growing_lost_nothing() -> None:
    assert lost_writes(OLD, Lineage("a" * 40, 1500, "0" * 40, -1)) is None


def test_a_promoted_replica_with_all_it_had_seen_lost_nothing_and_one_short_of_it_lost_writes() -> None:
    assert lost_writes(OLD, Lineage("b" * 40, 1001, "a" * 40, 1001)) is None
    why = lost_writes(OLD, Lineage("b" * 40, 900, "a" * 40, 900))
    assert why == "the promoted primary had the old history up to 899, 1000 had been seen"


def test_an_unrelated_history_or_an_offset_that_went_back_lost_writes() -> None:
    assert (
        lost_writes(OLD, Lineage("c" * 40, 5000, "d" * 40, 10))
        == "a primary with another history (cccccccc, not a continuation of aaaaaaaa)"
    )
    assert lost_writes(OLD, Lineage("a" * 40, 10, "0" * 40, -1)) == "the offset went back from 1000 to 10"
