"""The host key behind the containers' door secrets, and which requests carry a secret."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import httpx
import pytest

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.door import ENV, HEADER, TRACE_SCREENCAST, DoorAuth, container_env, door_for, load_key, secret
from cinnamon_pool.errors import ConfigError


def config(tmp_path: Path, **gateway: object) -> PoolConfig:
    tables = {"pool": {"name": "door"}, "container": {"door_key": str(tmp_path / "keys" / "door.key")}, "gateway": gateway}
    return PoolConfig.from_tables(tables)


def test_the_first_daemon_makes_a_private_key_and_the_others_read_the_same(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "door.key"
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(load_key(path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1 and len(keys[0]) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["door.key"], "no draft is left behind"


def test_a_symlinked_short_or_shared_key_is_refused_naming_the_file(tmp_path: Path) -> None:
    target, link = tmp_path / "elsewhere", tmp_path / "door.key"
    target.write_bytes(os.urandom(32))
    target.chmod(0o600)
    link.symlink_to(target)
    with pytest.raises(ConfigError, match=r"container\.door_key.*symlink"):
        load_key(link)
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 5)
    short.chmod(0o600)
    with pytest.raises(ConfigError, match="32 bytes"):
        load_key(short)
    shared = tmp_path / "shared.key"
    shared.write_bytes(os.urandom(32))
    shared.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by others.*644"):
        load_key(shared)


def test_only_requests_to_the_pools_containers_on_this_host_carry_their_own_secret(tmp_path: Path) -> None:
    door = door_for(config(tmp_path))
    assert isinstance(door, DoorAuth)
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    transport = httpx.MockTransport(answer)
    with httpx.Client(transport=transport, auth=door) as http:
        for url in ("http://127.0.0.1:3001/mcp", "http://127.0.0.1:3002/mcp", "http://127.0.0.1:8930/door/mcp", "http://gw-b:3001/mcp"):
            http.get(url)
    carried = [request.headers.get(HEADER) for request in sent]
    assert carried[0] == secret(door.key, "door", "127.0.0.1:3001") and carried[1] == secret(door.key, "door", "127.0.0.1:3002")
    assert carried[0] != carried[1], "each container has a secret of its own"
    assert carried[2:] == [None, None], "the gateway's own port and other hosts get nothing"
    assert container_env(config(tmp_path), door, 3001) == {ENV: carried[0]}


def test_a_pool_without_a_gateway_has_no_door(tmp_path: Path) -> None:
    direct = config(tmp_path, listen="")
    assert door_for(direct) is None and container_env(direct, None, 3001) == {}
    assert not (tmp_path / "keys").exists(), "no key is made where none is needed"


def test_a_trace_has_its_screencast_only_when_the_pool_asks_for_screenshots(tmp_path: Path) -> None:
    asked = PoolConfig.from_tables({"gateway": {"listen": ""}, "container": {"artifacts_screenshots": True}})
    assert container_env(asked, None, 3001) == {TRACE_SCREENCAST: "1"}, "the image's init page reads it"
    not_recorded = PoolConfig.from_tables(
        {"gateway": {"listen": ""}, "container": {"artifacts_screenshots": True, "artifacts_trace": False}}
    )
    assert container_env(not_recorded, None, 3001) == {}, "no trace, nothing to say about its screencast"
