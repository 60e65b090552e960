"""`cinnamon-pool doctor` against the real engine and redis-server."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.redis]
BIN = Path(sys.executable).parent


def doctor(redis_url: str, image: str, network: str) -> subprocess.CompletedProcess[str]:
    """`cinnamon-pool doctor` for a pool on ``network`` (a test's own: doctor makes it and its
    egress rules, and the test session removes both)."""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as config:
        config.write(f'[container]\nnetwork = "{network}"\n')
    env = {**os.environ, "CINNAMON_REDIS_URL": redis_url, "CINNAMON_IMAGE": image, "CINNAMON_CONFIG": config.name}
    try:
        return subprocess.run([str(BIN / "cinnamon-pool"), "doctor"], env=env, capture_output=True, text=True, timeout=120, input="")
    finally:
        os.unlink(config.name)


def test_doctor_passes_with_the_local_image_and_warns_about_persistence(redis_server: str, fake_image: str, test_network: str) -> None:
    result = doctor(redis_server, fake_image, test_network)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert any(line.startswith("OK   image: cinnamon-pool/fake-mcp:test is present") for line in lines), lines
    assert any(line.startswith("WARN redis persistence") and "fix: CONFIG SET appendonly yes" in line for line in lines), lines
    assert any(line.startswith("OK   door key: ") for line in lines), lines
    assert any(line.startswith("OK   door: cinnamon-pool/fake-mcp:test has the door") for line in lines), lines
    assert any(line.startswith("OK   chromium sandbox: on (--sandbox; seccomp profile") for line in lines), lines
    assert any(line.startswith(f"OK   egress: restricted on {test_network}") for line in lines), lines


def test_doctor_warns_about_an_image_without_the_door(redis_server: str, redis_image: str, test_network: str) -> None:
    result = doctor(redis_server, redis_image, test_network)
    line = next(line for line in result.stdout.splitlines() if line.split(":")[0].endswith(" door"))
    assert line.startswith(f"WARN door: {redis_image} has no door") and "door.js" in line, line


def test_doctor_fails_on_a_missing_image_with_the_fix(redis_server: str, test_network: str) -> None:
    result = doctor(redis_server, "cinnamon-pool/not-built:1", test_network)
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if " image: " in line)
    assert line.startswith("FAIL image: cinnamon-pool/not-built:1 is missing") and "fix: make images" in line, line


def test_doctor_fails_on_an_evicting_redis(redis_server: str, fake_image: str, test_network: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_server)
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        result = doctor(redis_server, fake_image, test_network)
    finally:
        client.config_set("maxmemory-policy", "noeviction")
    assert result.returncode == 1
    assert any(line.startswith("FAIL redis eviction: maxmemory-policy allkeys-lru") for line in result.stdout.splitlines()), result.stdout
