"""The gateway's HTTP/1.1 connections: uvicorn's httptools protocol with the limits it lacks.

uvicorn has no deadline for a request's head, and its keep-alive timer is cancelled by every
byte, so sockets that trickle a header byte now and then would hold the gateway's connections
for ever. This protocol adds two limits, checked on the event loop with no task per socket:

- the head of each request (request line and headers) must arrive whole within
  ``gateway.header_timeout_s`` of the connection's start or of the previous answer's end; a
  connection that misses it gets ``408`` and is closed (one that sent nothing is just closed);
- one client address holds at most ``gateway.max_connections_per_client`` connections at once;
  past it, a new connection gets ``429`` and is closed before anything is read.

Both are counted in the gateway's refusal counter (``header_timeout``, ``client_connections``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

Refused = Callable[[int, str, str, str], None]  # (status, reason label, message, client address) of each refusal

_CLOSE = b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"


def _answer(status: int, phrase: str, text: str) -> bytes:
    body = text.encode()
    return _CLOSE % (status, phrase.encode(), len(body), body)


def guarded_protocol(header_timeout_s: float, max_per_client: int, refused: Refused) -> type[HttpToolsProtocol]:
    """An ``HttpToolsProtocol`` class (uvicorn's fast parser, which the gateway runs on) for
    ``uvicorn.Config(http=...)`` with these limits; the connection counts live in the returned
    class, shared by its connections."""
    per_client: Counter[str] = Counter()

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _counted: str | None = None
        _in_head = False  # a request's first bytes came, its headers have not all

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = self.client[0] if self.client else "-"
            if per_client[address] >= max_per_client:
                message = f"at most {max_per_client} connections from one address"
                refused(429, "client_connections", message, address)
                transport.write(_answer(429, "Too Many Requests", message + "\n"))
                transport.close()
                return
            per_client[address] += 1
            self._counted = address
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._counted is not None:
                per_client[self._counted] -= 1
                if per_client[self._counted] <= 0:
                    del per_client[self._counted]
                self._counted = None
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's head has the same deadline

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout_s, self._timed_out)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _timed_out(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if not self._in_head:
                if self.cycle is not None and not self.cycle.response_complete:
                    return  # a request in progress (pipelined): its own limits apply
                self.transport.close()  # idle since it connected or since its last answer
                return
            message = f"the request head did not arrive whole within {header_timeout_s:g} s"
            refused(408, "header_timeout", message, self._counted or "-")
            self.transport.write(_answer(408, "Request Timeout", message + "\n"))
            self.transport.close()

    return GuardedHttpToolsProtocol


def uvicorn_options(header_timeout_s: float, max_per_client: int, refused: Refused) -> dict[str, Any]:
    """What ``uvicorn.Config`` takes to run the gateway on the guarded protocol."""
    return {"http": guarded_protocol(header_timeout_s, max_per_client, refused)}
