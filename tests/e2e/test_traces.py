"""A Playwright trace per lease, with the real playwright-mcp through real `supervise` and `gateway`
processes: a failed job leaves `trace.zip` with its failing action, named in RELEASED and
ERROR_OCCURRED; a job that passed leaves none (policy "failure"); `never` records nothing; and the
container's output folder is empty after every lease."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from cinnamon_pool.browser import Browser, ToolError
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.door import door_for
from cinnamon_pool.pool import ContainerPool
from tests.e2e.conftest import BIN, Supervised, prepared_on
from tests.support import free_port, wait_for_http

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.redis]
REFUSED = "http://127.0.0.1:9/sign-in"  # nothing listens there: the navigation fails in Playwright itself
HOME = "data:text/html,<title>Home</title><a href='/sign-in'>Sign in</a>"


def output_files(config: PoolConfig, slot: int = 0) -> list[str]:
    """What the container's output folder holds, through its door."""
    port = config.container.host_ports[slot]
    answer = httpx.get(f"http://127.0.0.1:{port}/.cinnamon/output", auth=door_for(config), timeout=10)
    assert answer.status_code == 200, answer.text
    return [entry["path"] for entry in answer.json()["files"]]


def wait_for_file(path: Path, timeout_s: float = 30) -> Path:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was not written in {timeout_s:g} s"
        time.sleep(0.1)
    return path


def failing_job(pool: ContainerPool, test_run_id: str, artifacts: str = "failure") -> tuple[str, list[str]]:
    """A sign-in job whose page does not load: its lease's trace path ("" when none), and what
    the container's output folder held during the lease."""
    with pytest.raises(ToolError), pool.lease(test_run_id, artifacts=artifacts) as lease, Browser(lease) as browser:
        browser.navigate(HOME)
        during = output_files(pool.config)
        browser.navigate(REFUSED)
    return lease.trace_path, during


def trace_of(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """A trace archive's file names, and the events of its trace."""
    with zipfile.ZipFile(path) as archive:
        return archive.namelist(), [json.loads(line) for line in archive.read("trace.trace").decode().splitlines() if line.strip()]


def released_record(logs: Path, test_run_id: str, action: str = "RELEASED", timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for path in (logs / "containers").glob("container-*.log"):
            for record in path.read_text().split("\n\n"):
                if f"| {action}" in record and f"Test Run: {test_run_id}\n" in record + "\n":
                    return record
        time.sleep(0.2)
    raise AssertionError(f"no {action} record of {test_run_id} in {logs}")


@pytest.mark.parametrize("supervised_pool", [1], indirect=True)
def test_a_failed_job_leaves_its_trace_and_a_passing_one_or_never_leaves_none(supervised_pool: Supervised) -> None:
    config, logs = supervised_pool.config, supervised_pool.logs
    pool = ContainerPool(config)

    prepared_on(pool, "container-001")
    relative, during = failing_job(pool, "trace-failed")
    assert relative.startswith("artifacts/") and relative.endswith("/trace-failed/trace.zip"), relative
    names, actions = trace_of(wait_for_file(logs / relative))
    shown = [a["snapshot"]["frameUrl"] for a in actions if a.get("type") == "frame-snapshot"]
    assert "trace.network" in names and HOME in shown, "the page's DOM as the job saw it (the viewer's before and after)"
    assert not [a for a in actions if a.get("type") == "screencast-frame"], "no screencast unless container.artifacts_screenshots"
    gotos = [a for a in actions if a.get("type") == "before" and a.get("method") == "goto"]
    assert [a["params"]["url"] for a in gotos][-1] == REFUSED, "the failing navigation is the trace's last goto"
    failed = [a for a in actions if a.get("type") == "after" and a.get("callId") == gotos[-1]["callId"]]
    assert failed and "ERR_" in json.dumps(failed[0].get("error", {})), "the trace shows the navigation's error"
    assert f"Trace: {relative}" in released_record(logs, "trace-failed")
    assert f"Trace: {relative}" in released_record(logs, "trace-failed", "ERROR_OCCURRED")

    prepared_on(pool, "container-001")
    assert any(path.endswith(".trace") for path in during) and not set(during) & set(output_files(config)), (
        "nothing of the last lease stays in the container (the next prepared session's own trace has begun)"
    )
    with pool.lease("trace-passed") as lease, Browser(lease) as browser:
        browser.navigate("data:text/html,<title>Fine</title>")
        during = output_files(config)
    assert lease.trace_path, "the session recorded"
    assert "Trace:" not in released_record(logs, "trace-passed"), "a passing job's trace is not kept (policy failure)"
    prepared_on(pool, "container-001")
    assert not (logs / lease.trace_path).exists() and not set(during) & set(output_files(config))

    never, during = failing_job(pool, "trace-never", artifacts="never")
    assert never == "" and not any(path.startswith("traces/") for path in during), "never: the trace is stopped at the hand-over"
    prepared_on(pool, "container-001")
    assert not list((logs / "artifacts").glob("*/trace-never/trace.zip")) and not set(during) & set(output_files(config))


@pytest.mark.parametrize("supervised_pool", [{"size": 1, "container": "artifacts_screenshots = true\n"}], indirect=True)
def test_a_trace_has_the_screencast_when_the_pool_asks_for_screenshots(supervised_pool: Supervised) -> None:
    pool = ContainerPool(supervised_pool.config)
    prepared_on(pool, "container-001")
    relative, _during = failing_job(pool, "trace-screencast")
    names, actions = trace_of(wait_for_file(supervised_pool.logs / relative))
    frames = [a["file"] for a in actions if a.get("type") == "screencast-frame"]
    assert frames and set(frames) <= set(names), "the screencast frames the trace names are in it"


CLIENTS = Path(__file__).parent / "clients"
PLAYWRIGHT_CORE = sorted(Path(__file__).parents[2].glob(".build/images/npm-playwright-mcp-*/node_modules/playwright-core"))


@pytest.mark.parametrize("supervised_pool", [1], indirect=True)
def test_the_dashboard_shows_the_pool_live_and_opens_a_failed_runs_trace_in_chromium(supervised_pool: Supervised, tmp_path: Path) -> None:
    """In Debian's headless Chromium: every page loads with no console error, the live table shows
    a job's lease as it starts (server-sent events, no reload), and the failed run's trace opens
    in the bundled viewer with its failing navigation. `CINNAMON_DASHBOARD_SCREENSHOT=docs/dashboard.png`
    writes the README's screenshot from the live page."""
    assert PLAYWRIGHT_CORE, "make images installs playwright-core under .build/images"
    config = supervised_pool.config
    pool = ContainerPool(config)
    prepared_on(pool, "container-001")
    failing_job(pool, "dashboard-failed")
    released_record(supervised_pool.logs, "dashboard-failed")

    port = free_port()
    file = tmp_path / "dashboard.toml"
    file.write_text(Path(supervised_pool.env["CINNAMON_CONFIG"]).read_text() + f'\n[dashboard]\nlisten = "127.0.0.1:{port}"\n')
    log = (tmp_path / "dashboard.log").open("w")
    env = {**supervised_pool.env, "CINNAMON_CONFIG": str(file)}
    dashboard = subprocess.Popen([BIN / "cinnamon-pool", "dashboard"], env=env, stdout=log, stderr=subprocess.STDOUT)
    driver = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/runs?format=json", 20, "the dashboard")
        runs = httpx.get(f"{base}/runs", params={"q": "dashboard-failed", "format": "json"}, timeout=10).json()
        assert [run["outcome"] for run in runs] == ["test_failed"] and runs[0]["trace"].endswith("/dashboard-failed/trace.zip")
        shot = os.environ.get("CINNAMON_DASHBOARD_SCREENSHOT", "")
        node_env = {**os.environ, "PLAYWRIGHT_CORE": str(PLAYWRIGHT_CORE[-1])}
        command = ["node", str(CLIENTS / "dashboard.mjs"), base, "dashboard-failed", *([str(Path(shot).resolve())] if shot else [])]
        driver = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=node_env)
        assert driver.stdout is not None and driver.stdin is not None
        first = driver.stdout.readline()
        assert first.strip() == "ready", first + driver.stdout.read()
        with pool.lease("dashboard-live") as lease, Browser(lease) as browser:
            driver.stdin.write("go\n")
            driver.stdin.flush()
            seen = json.loads(driver.stdout.readline())
            browser.navigate("data:text/html,<title>Live</title>")
        assert "failure" not in seen, seen
        assert seen["live"], "the live table showed the job's lease without a reload"
        assert all(errors == [] for errors in seen["errors"].values()), seen["errors"]
        assert seen["trace"], "the trace viewer showed the failed run's navigation"

        # Operator actions: the page's CSRF token is required, and a drain takes effect.
        csrf = re.search(r'data-csrf="([0-9a-f]+)"', httpx.get(f"{base}/", timeout=10).text)
        assert csrf is not None
        forged = httpx.post(f"{base}/actions", data={"action": "drain", "value": "", "csrf": "0" * 32}, timeout=10)
        assert forged.status_code == 403 and not pool.status()["draining"]
        drained = httpx.post(f"{base}/actions", data={"action": "drain", "value": "", "csrf": csrf[1]}, timeout=10)
        assert drained.status_code == 303 and "drained" in drained.headers["location"] and pool.status()["draining"]
        httpx.post(f"{base}/actions", data={"action": "undrain", "value": "", "csrf": csrf[1]}, timeout=10)
        assert not pool.status()["draining"]
        bad = httpx.post(f"{base}/actions", data={"action": "scale", "value": "many", "csrf": csrf[1]}, timeout=10)
        assert "size+%27many%27+is+not+a+whole+number" in bad.headers["location"], "a bad value is named"
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        dashboard.terminate()
        dashboard.wait(timeout=10)
        log.close()
