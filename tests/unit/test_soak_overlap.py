"""The soak's overlapping faults: the second of a pair is never of the first's family, and at
most one of the two starts a process again."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from tests.soak.runner import Soak
from tests.soak.settings import FAMILIES, FAULTS, HA_FAULTS, NETWORK_FAULTS, SPAWNING


@pytest.mark.parametrize("faults", [FAULTS, HA_FAULTS], ids=["one Redis (network faults too)", "replicated"])
def test_the_second_fault_of_a_pair_is_of_another_family_and_every_kind_still_comes(faults: tuple[str, ...]) -> None:
    soak = SimpleNamespace(random=random.Random(7), faults=faults)
    deck: list[str] = []
    seen: list[str] = []
    for _ in range(200):
        deck = deck or soak.random.sample(soak.faults, len(soak.faults))
        first = deck.pop()
        second = Soak.overlap_with(soak, first, deck)  # type: ignore[arg-type]
        assert second is not None and second != first
        assert not any(first in family and second in family for family in FAMILIES), (first, second)
        assert not (first in SPAWNING and second in SPAWNING), (first, second)
        seen += [first, second]
    assert set(seen) == set(faults), "every kind is drawn"


def test_a_round_left_with_only_the_first_faults_family_is_refilled() -> None:
    soak = SimpleNamespace(random=random.Random(1), faults=HA_FAULTS)
    deck = ["stop-horse"]
    second = Soak.overlap_with(soak, "kill-horse", deck)  # type: ignore[arg-type]
    assert second not in {"kill-horse", "stop-horse", "kill-worker"}
    assert "stop-horse" in deck, "the round's own fault is kept for later"


def test_network_faults_need_the_proxies_of_one_redis() -> None:
    """Sentinel and a cluster hand out the primary's own address: no proxy stands in the way."""
    assert set(NETWORK_FAULTS) <= set(FAULTS) and not set(NETWORK_FAULTS) & set(HA_FAULTS)
    assert any(family == set(NETWORK_FAULTS) for family in FAMILIES), "the proxies hold one fault at a time"
