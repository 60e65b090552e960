"""The pool's chores as actions: what a tick does besides the containers' plan (reconcile.py) and
their rules (rules.py), decided by upkeep.py and carried out by the actuator like any action.
Pure data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cinnamon_pool.model import Rejected, SizeMode


@dataclass(frozen=True)
class PublishReadings:
    """The tick's memory and CPU readings, for ``status``, the dashboard and the metrics."""

    memory_mb: Mapping[str, float]
    cpu_percent: Mapping[str, float]


@dataclass(frozen=True)
class DropRejected:
    """A value the decoder refused: reported the first time it is seen, dropped while it still
    holds the same bytes."""

    value: Rejected
    report: bool


@dataclass(frozen=True)
class RecycleAll:
    """Redis lost the pool's state (its epoch changed): any container may hold a job's leftovers,
    so this host's running containers restart together; ``epoch`` is the one seen now."""

    container_ids: tuple[str, ...]
    epoch: str | None


@dataclass(frozen=True)
class SetSize:
    """This host's desired size in Redis; ``scaled``: a step of the autoscaler or the operator (the
    cool-down starts)."""

    size: int
    reason: str
    mode: SizeMode = SizeMode.SET
    cooldown_s: float = 0.0
    scaled: bool = False


@dataclass(frozen=True)
class AnswerSizeRequest:
    """``cinnamon-pool scale N`` as Redis keeps it: followed (``size``), refused (``refusal``) or
    unreadable (``unreadable``); dropped in every case, while it still holds ``raw``."""

    raw: bytes | str
    size: int | None = None
    refusal: str = ""
    unreadable: Rejected | None = None


@dataclass(frozen=True)
class OfferCold:
    """A released container that no gateway prepared in time: offered without a prepared session."""

    name: str
    timeout_s: float


Chore = PublishReadings | DropRejected | RecycleAll | SetSize | AnswerSizeRequest | OfferCold
