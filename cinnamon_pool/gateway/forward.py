"""The containers' leg of each forwarded request: aiohttp, with the door's secret.

Every MCP request a holder sends through the gateway is sent again to its container. httpx (with
httpcore, anyio and h11) spent 1.0 ms of CPU on that leg per request on the 2-core test machine,
a third of the gateway's whole cost; aiohttp, whose HTTP parser is C, spent 0.25 ms for the same
request (``python -m tests.bench gateway`` reports the overhead as a holder feels it). The other
calls to containers (the preparer's sessions, the traces, the keepers) are few, and stay on httpx.

Answers stream back: :meth:`Answer.chunks` yields the body as the container writes it (transfer
encoding undone, content encoding kept, as httpx's ``aiter_raw`` did).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import aiohttp

from cinnamon_pool.door import DoorAuth
from cinnamon_pool.gateway.auth import Refusal

IDLE_CONNECTION_S = 5.0  # a kept-alive connection to a container is closed after this long unused (the door keeps them 65 s)


def failure(error: BaseException) -> str:
    """What went wrong on the way to a container, as the refusal says it (the names it had when
    this leg was httpx's, so what clients and operators match on stays)."""
    if isinstance(error, aiohttp.ServerTimeoutError):
        return "ConnectTimeout"
    if isinstance(error, (aiohttp.ClientConnectorError, ConnectionRefusedError)):
        return "ConnectError"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "RemoteProtocolError"
    return "ReadError"


class Answer:
    """A container's answer whose head has arrived; its body is read by :meth:`chunks` or :meth:`read`."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; ends quietly when the container closes or breaks the answer (its
        lease ended: the gateway closed it), and always lets the connection go."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, OSError):
            return
        finally:
            await self.close()

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        finally:
            await self.close()

    async def close(self) -> None:
        """Done with it: a connection whose answer was read whole goes back to the pool, any other is closed."""
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class Forwarder:
    """One pool of kept-alive connections to this host's containers."""

    def __init__(self, door: DoorAuth | None, connect_timeout_s: float) -> None:
        self.door = door
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=IDLE_CONNECTION_S),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s),
            auto_decompress=False,
            trust_env=False,
        )

    async def send(
        self, method: str, url: str, headers: dict[str, str], body: bytes, container: str = "", head_timeout_s: float | None = None
    ) -> Answer:
        """Send the request; the answer's body is left to stream. 502 when the container does not
        accept the connection or breaks it before answering; 504 when the answer to a POST or
        DELETE has not begun within ``head_timeout_s`` (a GET is the session's event stream: no limit)."""
        if self.door is not None:
            headers = {**headers, **self.door.headers_for(url)}
        limit = None if method == "GET" else head_timeout_s
        try:
            async with asyncio.timeout(limit):
                response = await self._session.request(method, url, headers=headers, data=body or None, allow_redirects=False)
        except TimeoutError as error:  # ours, or aiohttp's time-out to connect (a ClientError too)
            if not isinstance(error, aiohttp.ClientError):
                raise Refusal(504, "container_timeout", f"the container did not begin its answer within {limit:g} s", container) from None
            raise Refusal(502, "container_unreachable", f"the container did not answer ({failure(error)})", container) from None
        except (aiohttp.ClientError, OSError) as error:
            raise Refusal(502, "container_unreachable", f"the container did not answer ({failure(error)})", container) from None
        return Answer(response)

    async def close(self) -> None:
        await self._session.close()
