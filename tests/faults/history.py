"""A history of the lease protocol as clients and server saw it (its checker: checker.py).

Three files in one directory make a history:

- ``client-<pid>.jsonl``: what each client process did, one line per phase of an operation,
  ``{"op", "phase", "t", "pid", "container", "token", "detail"}`` (``token``: the lease token's
  fingerprint, the name the pool's events and the containers give it). ``op`` is acquire, renew,
  release or use (a call to the container); ``phase`` is invoke, ok, fail (rejected: it did not
  happen) or unknown (the reply was lost: it may have happened). ``t`` is Redis ``TIME`` in ms,
  read just before an invoke and just after its outcome, so a measured interval contains the
  real one. A use's outcome may carry ``served_t``: when the container itself served the call
  (the fake-mcp says so, on the same host clock). A process stopped between the call and its
  outcome record stretches the measured interval over later holders; the served moment does
  not move, so the checker prefers it.
- ``events.jsonl``: the pool's event stream, copied by :class:`StreamTail` as it grows, so a
  Redis that restarts empty loses at most the events of its last moments; a
  ``stream_restarted`` line marks where a new stream began. Each entry copied for the first time
  carries ``after_mono`` and ``before_mono``: it was appended between them (host monotonic ms),
  which places its Redis time on the monotonic clock even when the wall clock is stepped.
- ``faults.jsonl``: what the fault injector did, ``{"t", "mono", "killed_mono", "end_mono", "fault",
  "target", "pids", "jobs"}``: when it began, struck and ended (host monotonic ms), the processes it killed or
  stopped, and the rq jobs it hit.
- ``served/served-<container>-<pid>.jsonl`` (optional): what each container itself served,
  written by fake-mcp before it answers (``FAKE_MCP_RECORD_DIR``): ``{"container", "token",
  "tool", "start", "end"}`` on the monotonic clock the containers share with the host. This is
  the ground truth: it does not come from the Lua scripts under test.

Every client line also carries ``mono`` (host monotonic ms, always there, even while Redis is
away) and ``job`` (the rq job id, in a work horse).

checker.py reads them back and checks the lease invariants over them.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import redis

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.connect import redis_client
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.tokens import fingerprint

T = TypeVar("T")
REJECTIONS = ("LeaseLost", "LeaseNotOwned", "PoolExhausted", "PoolNotReady")


def pool_redis_from_env() -> redis.Redis:
    """The pool's Redis as this process's environment names it (``CINNAMON_CONFIG``,
    ``CINNAMON_REDIS_URL``, read as the job side reads them): on a Redis Cluster, the primary of
    the pool's slot, whose clock the scripts read."""
    config = PoolConfig.load(environ=os.environ)
    return redis_client(config.redis, pool=config.pool.name, socket_timeout=5)


def redis_ms(client: redis.Redis) -> int | None:
    """Redis TIME in ms; None when Redis does not answer (the checker then skips timing)."""
    try:
        seconds, micros = client.time()
    except redis.RedisError:
        return None
    return int(seconds) * 1000 + int(micros) // 1000


def monotonic_ms() -> float:
    """The kernel's monotonic clock in ms: one clock for the host, its processes and containers."""
    return round(time.monotonic() * 1000, 3)


def current_job_id() -> str:
    """The rq job this process runs (in a work horse), else ""."""
    from rq import get_current_job

    try:
        job = get_current_job()
    except Exception:  # no rq connection in this process: not a job
        return ""
    return job.id if job is not None else ""


class ClientHistory:
    """Appends this process's operations to ``client-<pid>.jsonl`` (one write per line, so
    a process killed mid-write leaves at most one torn last line, which the reader skips)."""

    def __init__(self, directory: Path, client: redis.Redis) -> None:
        self.directory, self.client = directory, client
        self._fd: int | None = None
        self._pid = 0

    def record(
        self,
        op: str,
        phase: str,
        container: str = "",
        token: str = "",
        detail: str = "",
        invoked_t: int | None = None,
        served_t: int | None = None,
    ) -> int | None:
        if self._pid != os.getpid():  # opened lazily, and again after a fork
            self._pid = os.getpid()
            self._fd = os.open(self.directory / f"client-{self._pid}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        t = redis_ms(self.client)
        line: dict[str, Any] = {
            "op": op, "phase": phase, "t": t, "mono": monotonic_ms(), "pid": self._pid, "container": container, "token": token,
        }  # fmt: skip
        job = current_job_id()
        if job:
            line["job"] = job
        if invoked_t is not None:
            line["invoked_t"] = invoked_t
        if served_t is not None:
            line["served_t"] = served_t
        if detail:
            line["detail"] = detail[:200]
        assert self._fd is not None
        os.write(self._fd, (json.dumps(line) + "\n").encode())
        return t

    def around(
        self, op: str, call: Callable[[], T], container: str = "", token: str = "", served: Callable[[T], int | None] | None = None
    ) -> T:
        """Run ``call`` between an invoke and its outcome; a grant's container and token are
        read from the result, and ``served`` reads from it when the container did the work
        (host clock, ms), which pins a use to a moment instead of the measured interval.
        ``token`` is the holder's own: the history names it by its fingerprint, as the pool's
        events and the containers' records do."""
        token = fingerprint(token) if token else ""
        invoked = self.record(op, "invoke", container, token)
        try:
            result = call()
        except Exception as error:
            kind = type(error).__name__
            phase = "fail" if kind in REJECTIONS else "unknown"
            self.record(op, phase, container, token, f"{kind}: {error}", invoked)
            raise
        name, granted = getattr(result, "name", container), getattr(result, "token", None)
        granted = fingerprint(granted) if isinstance(granted, str) else token
        self.record(op, "ok", name, granted, invoked_t=invoked, served_t=served(result) if served else None)
        return result


def instrument(store_class: type[LeaseStore], history: ClientHistory) -> None:
    """Record every acquire, renew and release made through ``store_class`` (a LeaseStore)."""
    original_acquire, original_renew, original_release = store_class.acquire, store_class.renew, store_class.release

    @functools.wraps(original_acquire)
    def acquire(self: Any, *args: Any, **kwargs: Any) -> Any:
        return history.around("acquire", lambda: original_acquire(self, *args, **kwargs))

    @functools.wraps(original_renew)
    def renew(self: Any, name: str, token: str, *args: Any, **kwargs: Any) -> Any:
        return history.around("renew", lambda: original_renew(self, name, token, *args, **kwargs), name, token)

    @functools.wraps(original_release)
    def release(self: Any, name: str, token: str, *args: Any, **kwargs: Any) -> Any:
        return history.around("release", lambda: original_release(self, name, token, *args, **kwargs), name, token)

    store_class.acquire, store_class.renew, store_class.release = acquire, renew, release  # type: ignore[method-assign]


COPIED_PER_READ = 1000
BLOCK_MS = 200  # how long a read of the stream waits for a new entry


class StreamTail:
    """Copies the pool's event stream to ``events.jsonl`` as it grows, in a thread. When another
    server answers (Redis restarted, or Sentinel promoted a replica), it goes on where it was if
    that server's stream has the last entry copied (a replica's copy), else it starts over from
    the new stream's beginning after a ``stream_restarted`` line (Redis came back empty).
    ``source``: the Redis URL, or a function that makes the client (one that follows Sentinel)."""

    def __init__(self, source: str | Callable[[], redis.Redis], pool: str, directory: Path) -> None:
        self.source, self.key, self.path = source, PoolKeys(pool).events, directory / "events.jsonl"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stream-tail", daemon=True)

    def __enter__(self) -> StreamTail:
        self.client = (
            redis.Redis.from_url(self.source, socket_timeout=5, decode_responses=True) if isinstance(self.source, str) else self.source()
        )
        self.after: float | None = None  # every entry not copied yet was appended after this
        try:
            asked = monotonic_ms()
            if self.client.xlen(self.key) == 0:  # an empty stream: all of it is appended from now on
                self.after = asked
        except redis.RedisError:
            pass  # not answering yet: what the first read copies was appended at an unknown moment
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # the last events of the run
        self.stop.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        client, after = self.client, self.after
        last, server = "0-0", ""
        newest = (0, 0)  # the newest entry ever copied: an older one is a copy of one already placed
        with self.path.open("a") as out:
            while not self.stop.is_set():
                try:
                    run_id = client.info("server")["run_id"]
                    if server and run_id != server and not (last != "0-0" and client.xrange(self.key, last, last)):
                        last = "0-0"  # a new stream (Redis restarted empty): from its beginning
                        asked = monotonic_ms()
                        now = redis_ms(client) or 0
                        out.write(
                            json.dumps({"kind": "stream_restarted", "at_ms": now, "after_mono": asked, "before_mono": monotonic_ms()})
                            + "\n"
                        )
                    server = run_id
                    asked = monotonic_ms()
                    read = cast(
                        list[tuple[str, list[tuple[str, dict[str, str]]]]],
                        client.xread({self.key: last}, count=COPIED_PER_READ, block=BLOCK_MS),
                    )
                    copied, count = monotonic_ms(), 0
                    for _, entries in read or []:
                        count += len(entries)
                        for entry_id, fields in entries:
                            line: dict[str, Any] = {"id": entry_id, **fields}
                            if _entry_order(entry_id) > newest:
                                newest = _entry_order(entry_id)
                                line.update({"before_mono": copied} if after is None else {"after_mono": after, "before_mono": copied})
                            out.write(json.dumps(line) + "\n")
                            last = entry_id
                    out.flush()
                    if not read:  # nothing was appended while the server blocked it, 200 ms at least
                        after = asked + BLOCK_MS
                    elif count < COPIED_PER_READ:  # all there was: what comes next is appended after this read
                        after = asked
                except redis.RedisError:
                    time.sleep(0.2)


def _entry_order(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def record_fault(
    directory: Path,
    client: redis.Redis,
    fault: str,
    pids: list[int] | None = None,
    *,
    target: str = "",
    jobs: list[str] | None = None,
    began_mono: float | None = None,
    killed_mono: float | None = None,
    ended_mono: float | None = None,
) -> None:
    """One line for one injected fault, written once it is done: when it began (``began_mono``,
    default now), when its signal struck (``killed_mono``, for kills: the moment that decides
    what the killed process could still have started) and when it ended (``ended_mono``, default
    now: a partition ends when it heals, before its hits are listed), what it hit."""
    end = ended_mono if ended_mono is not None else monotonic_ms()
    line = {
        "t": redis_ms(client) or int(time.time() * 1000),
        "mono": began_mono if began_mono is not None else end,
        "killed_mono": killed_mono if killed_mono is not None else end,
        "end_mono": end,
        "fault": fault,
        "target": target,
        "pids": pids or [],
        "jobs": jobs or [],
    }
    with (directory / "faults.jsonl").open("a") as out:
        out.write(json.dumps(line) + "\n")
