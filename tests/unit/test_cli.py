from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cinnamon_pool.cli import main


def test_help_lists_every_command_of_the_design(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("supervise", "gateway", "status", "report", "doctor", "drain", "scale", "kill", "restart"):
        assert command in out, f"{command} missing from --help"


def test_bad_configuration_fails_at_start_naming_key_and_value(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[container]\nmemory = "lots"\n')
    result = subprocess.run(
        [sys.executable, "-m", "cinnamon_pool.cli", "--config", str(config), "status"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, "a configuration error is an error of the surroundings: exit 2"
    assert "container.memory='lots'" in result.stderr, result.stderr


@pytest.mark.redis
def test_restart_names_an_unknown_container_and_drains_a_known_one(
    real_redis: object, redis_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cinnamon_pool.lease.store import LeaseStore
    from cinnamon_pool.model import Holder
    from tests.lease_helpers import record

    monkeypatch.delenv("CINNAMON_CONFIG", raising=False)
    monkeypatch.setenv("CINNAMON_REDIS_URL", redis_server)
    monkeypatch.setenv("CINNAMON_POOL", "unit")
    store = LeaseStore(real_redis, "unit")  # type: ignore[arg-type]
    store.register(record(1))
    store.register(record(2))
    held = store.acquire(Holder("busy"), timeout_s=1)
    assert main(["restart", "container-009"]) == 1
    assert "no container 'container-009'" in capsys.readouterr().err
    assert main(["restart", held.name]) == 0
    assert "when its job releases it" in capsys.readouterr().out
    other = "container-002" if held.name == "container-001" else "container-001"
    assert main(["restart", other]) == 0
    assert "restarts it now" in capsys.readouterr().out
    states = {n: r.state.value for n, r in store.snapshot().containers.items()}
    assert states == {held.name: "draining", other: "restarting"}


def test_the_daemons_diagnostics_follow_log_level_and_log_json(tmp_path: Path) -> None:
    """A supervisor whose Redis does not answer says so, as loguru JSON at ERROR; at CRITICAL it
    says nothing of the kind; the exit is by SIGTERM, as an operator stops it."""
    import json
    import os
    import signal
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    config = tmp_path / "pool.toml"
    config.write_text(f'[redis]\nurl = "redis://127.0.0.1:{port}/0"\n[logs]\ndir = "{tmp_path / "logs"}"\n[metrics]\nport = 0\n')

    def supervise(*options: str) -> str:
        env = {**os.environ, "CINNAMON_CONFIG": str(config)}
        command = [sys.executable, "-m", "cinnamon_pool.cli", *options, "supervise"]
        process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        time.sleep(3)
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
        return err

    lines = [json.loads(line) for line in supervise("--log-json").splitlines() if line.startswith("{")]
    assert lines, "one JSON object per line"
    errors = [line["record"] for line in lines if line["record"]["level"]["name"] == "ERROR"]
    assert errors and any("Connection" in e["message"] or "connect" in e["message"].lower() for e in errors), lines
    assert all(line["record"]["extra"]["command"] == "supervise" for line in lines)
    assert "ERROR" not in supervise("--log-level", "critical"), "below CRITICAL: nothing"
