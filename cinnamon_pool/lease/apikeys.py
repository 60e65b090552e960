"""API keys: who may open a browser session on connect, and how many at once.

A key is ``cpk_`` and 40 random hex digits, shown once by ``cinnamon-pool keys create``. Redis
keeps only its SHA-256 (``api_keys``, with the name and ``max_sessions``) and the name's hash
(``api_key_names``), in the pool's keys, so every gateway of the pool accepts a key at once and
whoever reads Redis learns no key. A revoked key is deleted: the gateway's next look-up misses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

import redis
import redis.asyncio as aioredis

from cinnamon_pool import decode
from cinnamon_pool.errors import ConfigError
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.redis_errors import translating
from cinnamon_pool.lease.scripts import Own, own
from cinnamon_pool.model import ApiKey, ConnectSession, validate_key_name

KEY_PREFIX = "cpk_"
KEY_RANDOM_HEX = 40


def digest(key: str) -> str:
    """What Redis keeps of ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_key(value: str) -> bool:
    return value.startswith(KEY_PREFIX) and len(value) == len(KEY_PREFIX) + KEY_RANDOM_HEX


class ApiKeys:
    """The operator's side (``cinnamon-pool keys``): create, list, revoke."""

    def __init__(self, client: redis.Redis, pool: str) -> None:
        self.client, self.keys = client, PoolKeys(pool)
        self._create = client.register_script(own(Own.KEY_CREATE))
        self._revoke = client.register_script(own(Own.KEY_REVOKE))

    @translating
    def create(self, name: str, max_sessions: int = 4, *, unsafe_tools: bool = False) -> str:
        """A new key named ``name``; the key is returned once and stored only as its hash.
        ``unsafe_tools``: its sessions may run code in the browser server (gateway/unsafe.py)."""
        validate_key_name(name)
        if max_sessions < 1:
            raise ConfigError("--max-sessions", max_sessions, "must be at least 1")
        key = KEY_PREFIX + secrets.token_hex(KEY_RANDOM_HEX // 2)
        created_ms = decode.time_ms(self.client.time())
        record = json.dumps({"name": name, "max_sessions": max_sessions, "created_ms": created_ms, "unsafe_tools": unsafe_tools})
        if not self._create(keys=[self.keys.api_keys, self.keys.api_key_names], args=[name, digest(key), record]):
            raise ConfigError("NAME", name, "a key of that name exists: revoke it first, or pick another name")
        return key

    @translating
    def list(self) -> list[ApiKey]:
        hashes: dict[Any, Any] = self.client.hgetall(self.keys.api_keys)
        used: dict[Any, Any] = self.client.hgetall(self.keys.api_key_used)
        found = []
        for raw in hashes.values():
            try:
                key = decode.api_key(raw)
            except decode.BadValue:
                continue  # not written by `keys create`: it opens nothing either
            last = used.get(key.name.encode(), used.get(key.name))
            with suppress(decode.BadValue):
                key = dataclasses.replace(key, last_used_ms=decode.integer(last, "last used", minimum=0) if last else 0)
            found.append(key)
        return sorted(found, key=lambda k: k.name)

    @translating
    def open_sessions(self) -> dict[str, int]:
        """Per key name, the sessions open on connect now: bound by a gateway, their lease holding."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(self.keys.connect_sessions)
        pipe.hgetall(self.keys.leases)
        pipe.time()
        bindings, leases, now = pipe.execute()
        counts: dict[str, int] = {}
        for binding in live_sessions(bindings, leases, decode.time_ms(now))[0]:
            counts[binding.key] = counts.get(binding.key, 0) + 1
        return counts

    @translating
    def revoke(self, name: str) -> bool:
        validate_key_name(name)
        return bool(self._revoke(keys=[self.keys.api_keys, self.keys.api_key_names, self.keys.api_key_used], args=[name]))


async def by_name(client: aioredis.Redis, keys: PoolKeys, name: str) -> ApiKey | None:
    """The record of the key named ``name``, or None (revoked, unknown, unreadable)."""
    hashed = await client.hget(keys.api_key_names, name)
    raw = None if hashed is None else await client.hget(keys.api_keys, hashed)
    try:
        return None if raw is None else decode.api_key(raw)
    except decode.BadValue:
        return None


async def look_up(client: aioredis.Redis, keys: PoolKeys, key: str) -> ApiKey | None:
    """The gateway's side: the key's record, or None for an unknown or revoked key."""
    if not looks_like_key(key):
        return None
    hashed = digest(key)
    raw = await client.hget(keys.api_keys, hashed)
    if raw is None:
        return None
    try:
        found = decode.api_key(raw)
    except decode.BadValue:
        return None
    stored = await client.hget(keys.api_key_names, found.name)
    ok = stored is not None and hmac.compare_digest(stored.decode() if isinstance(stored, bytes) else str(stored), hashed)
    return found if ok else None


def live_sessions(
    bindings: Mapping[Any, Any], leases: Mapping[Any, Any], now_ms: int
) -> tuple[list[ConnectSession], list[tuple[Any, Any]]]:
    """Of the on-connect sessions' bindings (``connect_sessions``, as read), those whose lease
    still holds (the token they were bound to is the container's current, unexpired lease), and
    the field and value of each other one: its lease has ended, and the gateway that should have
    forgotten it could not (it died, or Redis did not answer). Unreadable values are neither."""
    current: dict[str, str] = {}
    for name, value in leases.items():
        with suppress(decode.BadValue):
            lease = decode.lease(name, value)
            if now_ms < lease.expires_ms:
                current[lease.container] = lease.token
    live, ended = [], []
    for field_name, value in bindings.items():
        try:
            binding = decode.connect_session(field_name, value)
        except decode.BadValue:
            continue
        if current.get(binding.container) == binding.token:
            live.append(binding)
        else:
            ended.append((field_name, value))
    return live, ended
