"""Noticing a failover that lost writes.

Grants are made durable before they are returned (``redis.wait_replicas``), but other writes
(a release, a renewal, a registration) are not waited for. When Sentinel promotes a replica
that had not received all of them, the pool's state in Redis is older than what jobs and
supervisors saw. The supervisor then treats the pool as Redis having lost it (amnesia): the
state is dropped, every container is recycled, and a new epoch makes every earlier token dead.

It is noticed from Redis's own replication lineage (``INFO replication``): a primary has a
replication id and an offset that grows with every write; a promoted replica takes a new id and
keeps the old one as ``master_replid2`` with ``second_repl_offset``, one past the last byte of
the old history it had. If that is short of an offset the supervisor had already seen on the
old primary, writes were lost. A lost write made after the supervisor's last look is not
noticed: such a write is never a grant (those are waited for), so it is one that fails safe (a
lease that expires, a container recycled).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Lineage:
    replid: str
    offset: int  # master_repl_offset: how far this primary's history goes
    replid2: str  # the history it continues, if it was promoted ("0000..." if none)
    second_offset: int  # one past the last byte of that earlier history it had (-1 if none)

    @classmethod
    def from_info(cls, info: Mapping[str, object]) -> Lineage | None:
        """From ``INFO replication``; None if it does not tell (a managed Redis that hides it,
        say: the check is then off)."""
        try:
            return cls(
                str(info["master_replid"]),
                int(str(info["master_repl_offset"])),
                str(info["master_replid2"]),
                int(str(info["second_repl_offset"])),
            )
        except (KeyError, ValueError):
            return None


def lost_writes(before: Lineage, now: Lineage) -> str | None:
    """Why the history of ``now`` is missing writes seen in ``before``, or None if it is not."""
    if now.replid == before.replid:
        return None if now.offset >= before.offset else f"the offset went back from {before.offset} to {now.offset}"
    if now.replid2 == before.replid:
        if now.second_offset - 1 >= before.offset:
            return None  # promoted with all of the old history that had been seen
        return f"the promoted primary had the old history up to {now.second_offset - 1}, {before.offset} had been seen"
    return f"a primary with another history ({now.replid[:8]}, not a continuation of {before.replid[:8]})"
