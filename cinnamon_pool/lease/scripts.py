"""Load the lease scripts: one ``.lua`` file per operation, each prefixed with ``_lib.lua``.

redis-py's ``Script`` runs them with EVALSHA and falls back to EVAL when the server's script
cache was flushed, so a ``SCRIPT FLUSH`` never breaks the pool.
"""

from __future__ import annotations

import enum
from functools import cache
from importlib import resources


class Op(enum.StrEnum):
    ACQUIRE = "acquire"
    CANCEL = "cancel"
    RENEW = "renew"
    RELEASE = "release"
    REAP = "reap"
    REGISTER = "register"
    SET_STATE = "set_state"
    DEREGISTER = "deregister"
    LEADER = "leader"


class Status(enum.StrEnum):
    """First element of every script's reply."""

    OK = "OK"
    GRANTED = "GRANTED"
    WAIT = "WAIT"
    EXHAUSTED = "EXHAUSTED"
    NOT_READY = "NOT_READY"
    NOOP = "NOOP"
    LOST = "LOST"
    NOT_OWNER = "NOT_OWNER"
    UNKNOWN = "UNKNOWN"
    NOT_LEADER = "NOT_LEADER"
    BUSY = "BUSY"


@cache
def source(op: Op) -> str:
    folder = resources.files("cinnamon_pool.lease") / "lua"
    library = (folder / "_lib.lua").read_text(encoding="utf-8")
    body = (folder / f"{op.value}.lua").read_text(encoding="utf-8")
    return f"{library}\n-- ===== {op.value}.lua =====\n{body}"
