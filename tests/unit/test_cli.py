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
    for command in ("supervise", "status", "report", "doctor", "drain", "restart"):
        assert command in out, f"{command} missing from --help"
    assert "not built yet" in out, "commands built later must say so"


def test_bad_configuration_fails_at_start_naming_key_and_value(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[container]\nmemory = "lots"\n')
    result = subprocess.run(
        [sys.executable, "-m", "cinnamon_pool.cli", "--config", str(config), "status"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "container.memory='lots'" in result.stderr, result.stderr


def test_a_command_built_later_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["restart", "container-001"]) == 2
    assert "not built yet" in capsys.readouterr().err
