"""Traces and the dashboard's reading, without a container: the archive the viewer opens, the
day's bound, the policy, the record Redis keeps, the runs read back from the logs."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from cinnamon_pool import decode
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.dashboard.app import Guard, check_exposure
from cinnamon_pool.dashboard.runs import artifacts, recent_runs, runs_of
from cinnamon_pool.errors import ConfigError
from cinnamon_pool.gateway.traces import cut_day_back, trace_path, zipped
from cinnamon_pool.logs.format import LogRecord
from cinnamon_pool.model import Holder, keeps_artifacts

TOKEN = "0123456789abcdef:7:fedcba9876543210"


def _file(path: str, data: bytes) -> dict[str, str]:
    return {"path": path, "data": base64.b64encode(data).decode()}


def test_the_servers_trace_files_become_an_archive_the_viewer_opens() -> None:
    files = [
        _file("traces/trace-1712.trace", b'{"type":"before"}\n'),
        _file("traces/trace-1712.network", b"{}\n"),
        _file("traces/resources/abc123.jpeg", b"jpeg"),
        _file("traces/screencast/page@1-17.jpeg", b"frame"),
        _file("video-1712.webm", b"webm"),
        _file("page-2026.yml", b"a snapshot file: not part of the trace"),
        {"path": "traces/bad.trace", "data": "not base64!"},
    ]
    with zipfile.ZipFile(BytesIO(zipped(files))) as archive:
        assert sorted(archive.namelist()) == [
            "resources/abc123.jpeg",
            "screencast/page@1-17.jpeg",
            "trace.network",
            "trace.trace",
            "video/video-1712.webm",
        ]
        assert archive.read("trace.trace") == b'{"type":"before"}\n'


def test_a_days_artifacts_are_cut_back_oldest_trace_first(tmp_path: Path) -> None:
    day = tmp_path / "2026-12-07"
    for age, run in enumerate(["newest", "middle", "oldest"]):
        (day / run).mkdir(parents=True)
        trace = day / run / "trace.zip"
        trace.write_bytes(b"x" * 1000)
        os.utime(trace, (1_000_000 - age * 100, 1_000_000 - age * 100))
        (day / run / "screenshot.png").write_bytes(b"y" * 100)
    removed = cut_day_back(day, 2400)
    assert [path.parent.name for path in removed] == ["oldest"]
    assert (day / "newest" / "trace.zip").exists() and (day / "oldest" / "screenshot.png").exists(), "only traces are cut"


def test_the_policy_keeps_a_trace_when_the_job_failed_or_always() -> None:
    assert [keeps_artifacts(p, "ok") for p in ("", "failure", "always", "never")] == [False, False, True, False]
    assert [keeps_artifacts(p, "lost") for p in ("", "failure", "always", "never")] == [True, True, True, False]
    assert keeps_artifacts("failure", "test_failed") and keeps_artifacts("failure", "infra_error")
    with pytest.raises(ValueError, match="artifacts='sometimes'"):
        Holder("run-1", artifacts="sometimes")
    assert trace_path(dt.date(2026, 12, 7), "../../etc/passwd") == "artifacts/2026-12-07/_.._etc_passwd/trace.zip"


def test_a_leases_trace_is_read_back_from_redis_only_when_it_names_a_trace_file() -> None:
    good: dict[str, Any] = {
        "token": TOKEN,
        "sessions": ["s1"],
        "trace": {"session": "s1", "policy": "always", "path": "artifacts/2026-12-07/run-1/trace.zip"},
    }
    token, sessions, trace = decode.lease_sessions("container-001", json.dumps(good))
    assert (token, sessions, trace and trace.path) == (TOKEN, ["s1"], "artifacts/2026-12-07/run-1/trace.zip")
    assert decode.lease_sessions("container-001", json.dumps({"token": TOKEN, "sessions": []}))[2] is None
    for path in ("/etc/passwd", "artifacts/2026-12-07/../../x/trace.zip", "artifacts/2026-12-07/run/other.zip"):
        with pytest.raises(decode.BadValue, match="trace path"):
            decode.lease_sessions("container-001", json.dumps({**good, "trace": {**good["trace"], "path": path}}))
    with pytest.raises(decode.BadValue, match="artifacts 'often'"):
        decode.lease_sessions("container-001", json.dumps({**good, "trace": {**good["trace"], "policy": "often"}}))


def _record(minute: int, action: str, container: str, *details: tuple[str, str]) -> LogRecord:
    return LogRecord(dt.datetime(2026, 12, 7, 10, minute), "INFO", container, action, details)


def test_runs_are_read_back_from_the_logs_newest_first_with_wait_error_and_trace() -> None:
    records = [
        _record(1, "ALLOCATED", "container-001", ("Test Run", "a"), ("Wait Time", "0.2s")),
        _record(2, "ALLOCATED", "container-002", ("Test Run", "b"), ("Wait Time", "1.5s")),
        _record(3, "RELEASED", "container-001", ("Test Run", "a"), ("Outcome", "ok"), ("Duration", "1.00s")),
        _record(4, "ERROR_OCCURRED", "container-002", ("Test Run", "b"), ("Error", "ToolError: page.goto"), ("Context", "page_navigation")),
        _record(
            4, "RELEASED", "container-002", ("Test Run", "b"), ("Outcome", "infra_error"), ("Trace", "artifacts/2026-12-07/b/trace.zip")
        ),
    ]
    runs = runs_of(records)
    assert [(r.test_run_id, r.wait, r.outcome) for r in runs] == [("b", "1.5s", "infra_error"), ("a", "0.2s", "ok")]
    assert runs[0].error == "ToolError: page.goto" and runs[0].trace.endswith("b/trace.zip") and runs[1].trace == ""
    assert [r.test_run_id for r in runs if r.matches("goto container-002")] == ["b"]


def test_runs_of_earlier_days_are_read_until_the_page_is_full(tmp_path: Path) -> None:
    folder = tmp_path / "containers"
    folder.mkdir()
    for day in ("2026-12-05", "2026-12-07"):
        (folder / f"container-usage-{day}.log").write_text(
            f"[{day} 10:00:00] INFO  container-001 | RELEASED\n  └─ Test Run: run-{day}\n  └─ Outcome: ok\n  └─ Duration: 1.00s\n\n"
        )
    assert [r.test_run_id for r in recent_runs(tmp_path, dt.date(2026, 12, 7))] == ["run-2026-12-07", "run-2026-12-05"]
    assert [r.test_run_id for r in recent_runs(tmp_path, dt.date(2026, 12, 7), limit=1)] == ["run-2026-12-07"]


def test_a_runs_artifacts_are_the_fixed_files_of_a_folder_a_writer_makes(tmp_path: Path) -> None:
    folder = tmp_path / "artifacts" / "2026-12-07" / "run-1"
    folder.mkdir(parents=True)
    (folder / "trace.zip").write_bytes(b"zip")
    (folder / "notes.txt").write_text("not an artifact")
    assert set(artifacts(tmp_path, "2026-12-07", "run-1")) == {"trace.zip"}
    for folder_name in ("..", ".", "run 1", "../2026-12-07/run-1"):
        assert artifacts(tmp_path, "2026-12-07", folder_name) == {}, folder_name


def test_the_dashboard_away_from_loopback_needs_a_login_and_tls_or_an_explicit_plain_http() -> None:
    with pytest.raises(ConfigError, match=r"dashboard\.listen.*0\.0\.0\.0:8940.*allow_plain_http"):
        check_exposure(PoolConfig.from_tables({"dashboard": {"listen": "0.0.0.0:8940"}}))
    config = PoolConfig.from_tables({"dashboard": {"listen": "0.0.0.0:8940", "password": "s3cret", "allow_plain_http": True}})
    check_exposure(config)

    async def no_keys(_key: str) -> bool:
        return False

    async def ask(header: bytes) -> int:
        answered: list[int] = []

        async def app(_scope: object, _receive: object, _send: object) -> None:
            answered.append(200)

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":
                answered.append(int(message["status"]))  # type: ignore[call-overload]

        scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"authorization", header)] if header else []}
        await Guard(app, config, no_keys)(scope, None, send)
        return answered[0]

    basic = b"Basic " + base64.b64encode(b"anyone:s3cret")
    wrong = b"Basic " + base64.b64encode(b"anyone:guess")
    assert asyncio.run(ask(basic)) == 200 and asyncio.run(ask(wrong)) == 401 and asyncio.run(ask(b"")) == 401
