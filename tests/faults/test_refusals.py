"""What the supervisor refuses to start with: a Redis that may evict lease keys."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.support import start_redis_server, stop

pytestmark = pytest.mark.redis


def test_supervise_refuses_a_redis_configured_to_evict_and_writes_nothing(tmp_path: Path) -> None:
    process, url = start_redis_server(tmp_path)
    try:
        client = redis.Redis.from_url(url)
        client.config_set("maxmemory-policy", "allkeys-lru")
        config = tmp_path / "pool.toml"
        config.write_text(f'[redis]\nurl = "{url}"\n[pool]\nname = "evicting"\n[metrics]\nport = 0\n[logs]\ndir = "{tmp_path}"\n')
        result = subprocess.run(
            [str(Path(sys.executable).parent / "cinnamon-pool"), "supervise"],
            env={**os.environ, "CINNAMON_CONFIG": str(config)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert "refusing to start: Redis maxmemory-policy is 'allkeys-lru'" in result.stderr
        assert "CONFIG SET maxmemory-policy noeviction" in result.stderr, "the message says how to fix it"
        assert client.keys("*") == [], "nothing written to the evicting Redis"
    finally:
        stop(process)
