"""The same trivial job with and without @with_container, for the decorator's overhead."""

from __future__ import annotations

from cinnamon_pool import ContainerLease, with_container


def plain(n: int) -> int:
    return n + 1


@with_container(acquire_timeout_s=10)
def decorated(n: int, *, container: ContainerLease) -> int:
    return n + 1
