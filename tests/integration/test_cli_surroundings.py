"""Every command, run as an operator runs it, answers a down Redis, a down Docker, a bad log
level and a missing config file with one line naming the problem and exit 2, never a traceback;
the daemons wait for Redis and Docker instead of exiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "cinnamon-pool"
# Every command that reads the pool, with arguments that would work against a live pool.
COMMANDS = [["status"], ["status", "--json"], ["kill", "run-1"], ["scale", "2"], ["restart", "container-001"], ["drain"]]
DOWN_REDIS = "redis://alice:s3cret@127.0.0.1:1/0"  # nothing listens on port 1


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CINNAMON_")}
    return subprocess.run([str(BIN), *args], env={**environ, **env}, capture_output=True, text=True, timeout=60, check=False)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, f"exit {result.returncode}, wanted 2: {result.stderr}"
    assert len(lines) == 1 and "Traceback" not in result.stderr, f"one line, not a traceback: {result.stderr}"
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_down_redis_is_one_line_without_the_password(command: list[str]) -> None:
    line = one_line(run(command, CINNAMON_REDIS_URL=DOWN_REDIS))
    assert f"cinnamon-pool {command[0]}: Redis at redis://alice:***@127.0.0.1:1/0 does not answer" in line, line
    assert "s3cret" not in line


@pytest.mark.parametrize("command", [*COMMANDS, ["report"], ["doctor"]], ids=" ".join)
def test_a_missing_config_file_names_the_flag_before_or_after_the_command(command: list[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    before = one_line(run(["--config", missing, *command]))
    after = one_line(run([*command, "--config", missing]))
    assert before == after == f"cinnamon-pool {command[0]}: config --config={missing!r}: file not found"
    from_env = one_line(run(command, CINNAMON_CONFIG=missing))
    assert f"CINNAMON_CONFIG={missing!r}: file not found" in from_env


@pytest.mark.parametrize("command", [["status"], ["supervise"], ["gateway"]], ids=" ".join)
def test_a_bad_log_level_is_one_line(command: list[str]) -> None:
    assert "CINNAMON_LOG_LEVEL='LOUD': use one of TRACE" in one_line(run(command, CINNAMON_LOG_LEVEL="loud"))
    assert "--log-level='LOUD'" in one_line(run([*command, "--log-level", "loud"]))


def test_an_environment_value_of_the_wrong_type_says_what_it_must_be() -> None:
    assert "CINNAMON_MAX_SIZE='ten': must be a whole number" in one_line(run(["status"], CINNAMON_MAX_SIZE="ten"))


@pytest.mark.redis
@pytest.mark.parametrize("daemon", ["supervise", "gateway"])
def test_the_daemons_wait_for_a_down_docker_saying_so_once_per_back_off(daemon: str, redis_server: str, tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CINNAMON_")}
    env = {**environ, "CINNAMON_REDIS_URL": redis_server, "CINNAMON_POOL": f"nodocker-{daemon}", "CINNAMON_LOG_DIR": str(tmp_path)}
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-docker.sock"
    process = subprocess.Popen([str(BIN), daemon], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
        assert process.poll() is None, f"{daemon} exited while Docker was down: {process.stderr.read() if process.stderr else ''}"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    waits = [line for line in stderr.splitlines() if "the Docker daemon does not answer" in line]
    assert 2 <= len(waits) <= 3, f"one error per back-off (1 s, 2 s, ...): {stderr}"
    assert "Traceback" not in stderr, stderr
