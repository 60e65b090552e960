"""The README's examples (workers/examples.py) run against a real pool: supervise, gateway and
playwright-mcp, as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import Supervised

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.redis]


def example(pool: Supervised, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "workers.examples", *args]
    return subprocess.run(command, env={**pool.env, "COLUMNS": "200"}, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_the_basic_monitoring_and_analysis_examples_run(supervised_pool: Supervised, tmp_path: Path) -> None:
    basic = example(supervised_pool, "basic", "--jobs", "3")
    assert basic.returncode == 0, basic.stdout + basic.stderr
    assert basic.stdout.count("  PASSED  example-") == 3 and "3 passed, 0 failed" in basic.stdout

    monitoring = example(supervised_pool, "monitoring")
    assert monitoring.returncode == 0, monitoring.stdout + monitoring.stderr
    assert "CONTAINER" in monitoring.stdout and "MCP P50" in monitoring.stdout
    assert "gateway metrics" in monitoring.stdout and "cinnamon_pool_gateway_tool_call_seconds" in monitoring.stdout

    html = tmp_path / "report.html"
    analysis = example(supervised_pool, "analysis", "--html", str(html))
    assert analysis.returncode == 0, analysis.stdout + analysis.stderr
    assert "records from" in analysis.stdout and "container-001" in analysis.stdout
    assert html.read_text().startswith("<!doctype html>")
