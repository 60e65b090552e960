"""Load the lease scripts: one ``.lua`` file per operation, each prefixed with the generated
KEYS prelude and ``_lib.lua``; and the few small scripts that take keys of their own
(``lua/own/``: compare-and-delete, API keys), as they are.

redis-py's ``Script`` runs them with EVALSHA and falls back to EVAL when the server's script
cache was flushed, so a ``SCRIPT FLUSH`` never breaks the pool.
"""

from __future__ import annotations

import enum
from functools import cache
from importlib import resources

from cinnamon_pool.keys import SCRIPT_KEYS, PoolKeys


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
    SET_SIZE = "set_size"
    FORGET = "forget"
    HOST = "host"
    PREPARED = "prepared"


class Own(enum.StrEnum):
    """The scripts of ``lua/own/``, each with its KEYS and ARGV in its header."""

    COMPARE_AND_DELETE = "compare_and_delete"
    COMPARE_AND_DELETE_FIELD = "compare_and_delete_field"
    KEY_CREATE = "key_create"
    KEY_REVOKE = "key_revoke"


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


def key_prelude() -> str:
    """``local K_META = KEYS[1] .. 'meta'`` ... for each name of :data:`cinnamon_pool.keys.SCRIPT_KEYS`:
    KEYS[1] is the pool's prefix, KEYS[2] the leader key of the caller's host."""
    sample = PoolKeys("pool")

    def line(lua: str, attribute: str) -> str:
        if attribute == "leader":
            return f"local {lua} = KEYS[2]  -- the caller's host's leader key"
        return f"local {lua} = KEYS[1] .. '{getattr(sample, attribute).removeprefix(sample.prefix)}'"

    lines = [line(lua, attribute) for lua, attribute in SCRIPT_KEYS]
    return "-- generated from cinnamon_pool/keys.py SCRIPT_KEYS: KEYS = {the pool's prefix, a leader key}\n" + "\n".join(lines)


@cache
def source(op: Op) -> str:
    folder = resources.files("cinnamon_pool.lease") / "lua"
    library = (folder / "_lib.lua").read_text(encoding="utf-8")
    body = (folder / f"{op.value}.lua").read_text(encoding="utf-8")
    return f"{key_prelude()}\n{library}\n-- ===== {op.value}.lua =====\n{body}"


@cache
def own(script: Own) -> str:
    return (resources.files("cinnamon_pool.lease") / "lua" / "own" / f"{script.value}.lua").read_text(encoding="utf-8")
