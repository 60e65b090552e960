"""What the gateway has in flight for each lease: requests waiting for a container's answer and
responses streaming back, each with the way to cut it when its lease ends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Closer = Callable[[], Awaitable[None]]


@dataclass
class Streams:
    """What is in flight for each container and token: requests waiting for the container's
    answer and responses streaming back, each with the way to cut it when the lease ends."""

    open: dict[tuple[str, str], dict[object, Closer]] = field(default_factory=dict)

    def add(self, name: str, token: str, handle: object, close: Closer) -> None:
        self.open.setdefault((name, token), {})[handle] = close

    def discard(self, name: str, token: str, handle: object) -> None:
        held = self.open.get((name, token))
        if held is not None:
            held.pop(handle, None)
            if not held:
                del self.open[(name, token)]

    def count(self) -> int:
        return sum(len(held) for held in self.open.values())

    def held(self, name: str, token: str) -> int:
        """What is in flight under one lease."""
        return len(self.open.get((name, token), ()))
