"""A small TCP fault proxy for the fault tests: sits between a client and a server on loopback
and can add latency, blackhole (accept, never forward), reset, refuse connections, or lose one
reply after the server acted on the request."""

from __future__ import annotations

import contextlib
import enum
import select
import socket
import threading
import time


class Fault(enum.StrEnum):
    NONE = "none"
    LATENCY = "latency"  # forward, each chunk delayed by latency_s
    BLACKHOLE = "blackhole"  # keep connections, forward nothing
    RESET = "reset"  # close every connection at once (RST)
    DOWN = "down"  # refuse new connections and drop the open ones
    LOSE_REPLY = "lose-reply"  # forward requests; drop the next reply and close that connection, once


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.fault = Fault.NONE
        self.latency_s = 0.0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="fault-proxy").start()

    def set(self, fault: Fault, latency_s: float = 0.0) -> None:
        self.fault, self.latency_s = fault, latency_s
        if fault in {Fault.RESET, Fault.DOWN}:
            self._drop_all(reset=fault is Fault.RESET)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._drop_all(reset=False)

    def _drop_all(self, reset: bool) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            try:
                if reset:
                    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                connection.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.fault in {Fault.DOWN, Fault.RESET}:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.2)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    if self.fault is Fault.BLACKHOLE:
                        continue
                    if self.fault is Fault.LOSE_REPLY and source is upstream:
                        self.fault = Fault.NONE
                        return  # the server did the work; the client never hears of it
                    if self.fault is Fault.LATENCY and self.latency_s:
                        time.sleep(self.latency_s)
                    peers[source].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()
