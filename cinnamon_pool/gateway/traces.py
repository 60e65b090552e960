"""A Playwright trace of every lease: recorded from before the hand-over, written out at its end.

The gateway starts the trace in the session it prepares (``browser_start_tracing``: every
action with DOM snapshots before and after, network, console; the image's init page,
``trace-options.js``, leaves out the screencast unless ``container.artifacts_screenshots``), so a
job pays nothing for it at the hand-over. When the lease ends, and before its sessions are ended, the gateway decides by
the holder's artifacts policy (``always``; ``failure``, the default, when the job did not end
``ok`` or the lease ended without a release; ``never`` stopped it at the hand-over). A trace to
keep is stopped, fetched through the container's door (``/.cinnamon/output``, which serves
what the server wrote under its ``--output-dir``) and written to
``<logs.dir>/artifacts/<date>/<test run id>/trace.zip`` on this host, the container's. Then the
folder in the container is emptied, kept or not, so nothing passes from one lease to the next.

Bounds (``logs.artifacts_max_mb``): a trace larger than it is not kept, and a day's artifacts
folder is cut back to it after each write, the oldest runs' traces first.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import io
import zipfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from loguru import logger

from cinnamon_pool.errors import SessionFailed
from cinnamon_pool.logs.actions import Detail, Details
from cinnamon_pool.model import Artifacts, HeldSession, LeaseTrace, keeps_artifacts
from cinnamon_pool.safefiles import private_folder, safe_name, write_private

START = {"name": "browser_start_tracing", "arguments": {}}
STOP = {"name": "browser_stop_tracing", "arguments": {}}
VIDEO_START = {"name": "browser_start_video", "arguments": {}}
VIDEO_STOP = {"name": "browser_stop_video", "arguments": {}}
OUTPUT = "/.cinnamon/output"  # the door's view of the server's --output-dir (door.js)
TRACE_FILE = "trace.zip"
CallTool = Callable[[str, Mapping[str, Any]], Awaitable[str]]  # (session, tool) -> its text
STOP_TIMEOUT_S = 15.0  # stopping a trace flushes it: at 0.5 CPU a long lease's takes a few seconds


def trace_path(day: datetime.date, test_run_id: str) -> str:
    """Where a run's trace is kept, relative to ``logs.dir`` (beside its other artifacts)."""
    return f"artifacts/{day:%Y-%m-%d}/{safe_name(test_run_id)}/{TRACE_FILE}"


def zipped(files: list[dict[str, Any]]) -> bytes:
    """The trace files the door sent, as a trace archive the trace viewer opens: the trace's
    ``.trace``/``.network``/``.stacks`` renamed ``trace.*``, the files it names (``screencast/``
    frames, ``resources/``) at their paths under ``traces/``, and any video. The server's other
    files (its snapshots as ``page-*.yml``) are not the trace's."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for entry in files:
            path = Path(str(entry.get("path", "")))
            try:
                data = base64.b64decode(str(entry.get("data", "")), validate=True)
            except binascii.Error:
                continue
            if path.parent == Path("traces") and path.suffix in {".trace", ".network", ".stacks"}:
                archive.writestr(f"trace{path.suffix}", data)
            elif path.parts[0] == "traces" and len(path.parts) > 2 and ".." not in path.parts:
                archive.writestr("/".join(path.parts[1:]), data)
            elif path.suffix == ".webm" and len(path.parts) == 1:
                archive.writestr(f"video/{path.name}", data)
    return buffer.getvalue()


def cut_day_back(day_folder: Path, max_bytes: int) -> list[Path]:
    """Delete the oldest traces of ``day_folder`` until its files add up to ``max_bytes``."""
    files = [p for p in day_folder.rglob("*") if p.is_file() and not p.is_symlink()]
    total = sum(p.stat().st_size for p in files)
    removed = []
    for trace in sorted((p for p in files if p.name == TRACE_FILE), key=lambda p: p.stat().st_mtime):
        if total <= max_bytes:
            break
        total -= trace.stat().st_size
        trace.unlink(missing_ok=True)
        removed.append(trace)
    return removed


@dataclass
class Traces:
    """The gateway's trace recorder for its host's containers."""

    http: httpx.AsyncClient  # carries the door's secret (gateway/app.py)
    url_of: Callable[[str], str]  # a container's MCP URL on this host
    logs_dir: Path
    max_bytes: int
    report: Callable[[str, Details], None]  # (container, ERROR_OCCURRED details)
    video: bool = False

    def started(self) -> list[dict[str, Any]]:
        """What a prepared session calls, after its blank page, to record the lease it is handed to."""
        return [START, *([VIDEO_START] if self.video else [])]

    def stopping(self) -> list[dict[str, Any]]:
        return [STOP, *([VIDEO_STOP] if self.video else [])]

    async def hand_over(
        self, handed: HeldSession, policy: str, test_run_id: str, today: datetime.date, call_tool: CallTool
    ) -> LeaseTrace | None:
        """The trace a handed prepared session records for its lease; a holder whose policy is
        ``never`` has it stopped, and its files removed, before it gets the session."""
        if not handed.tracing:
            return None
        if policy == Artifacts.NEVER:
            try:
                for tool in self.stopping():
                    await call_tool(handed.session, tool)
            except (SessionFailed, httpx.HTTPError) as error:  # (the holder gets the session anyway; what it wrote is emptied below)
                logger.info("{}: stopping a trace at the hand-over: {}", handed.name, error)
            await self.empty(handed.name)
            return None
        return LeaseTrace(handed.session, policy, trace_path(today, test_run_id))

    def _output_url(self, name: str) -> str:
        return self.url_of(name).removesuffix("/mcp") + OUTPUT

    async def finish(self, name: str, trace: LeaseTrace, outcome: str, call_tool: CallTool) -> str | None:
        """At the end of ``name``'s lease, before its sessions end: stop the trace and write it
        where :attr:`LeaseTrace.path` says, if the policy keeps it for ``outcome`` (the path
        written), else None. A failure is reported, never raised: the lease's end goes on."""
        if not keeps_artifacts(trace.policy, outcome):
            return None
        try:
            await self._stop(name, trace.session, call_tool)
            return await self._keep(name, trace)
        except httpx.TransportError as error:  # the container is gone (killed, replaced): its trace went with it
            logger.info("{}: the lease's trace went with its container ({})", name, type(error).__name__)
            return None
        except Exception as error:  # the server's answer, the door, the disk: said, and the lease ends
            self.report(
                name, [(Detail.ERROR, f"the lease's trace was not kept: {type(error).__name__}: {error}"[:300]), (Detail.CONTEXT, "trace")]
            )
            return None

    async def _stop(self, name: str, session: str, call_tool: CallTool) -> None:
        """Stop the recording, if its session is still open. A holder that ended it (a DELETE:
        ``Browser`` and most clients end theirs before they release) closed its browser context
        with it, and the live trace already holds every action up to then."""
        try:
            for tool in self.stopping():
                await asyncio.wait_for(call_tool(session, tool), STOP_TIMEOUT_S)
        except (SessionFailed, httpx.HTTPError, TimeoutError) as error:
            logger.debug("{}: the trace's session had ended ({}: {})", name, type(error).__name__, error)

    async def _keep(self, name: str, trace: LeaseTrace) -> str | None:
        answer = await self.http.get(self._output_url(name), params={"max": self.max_bytes})
        if answer.status_code == 413:
            logger.warning("{}: the trace of {} is over logs.artifacts_max_mb: not kept", name, trace.path)
            return None
        answer.raise_for_status()
        files = answer.json().get("files", [])
        if not any(str(entry.get("path", "")).endswith(".trace") for entry in files):
            return None
        data = await asyncio.to_thread(zipped, files)
        await asyncio.to_thread(self._write, trace.path, data)
        return trace.path

    def _write(self, relative: str, data: bytes) -> None:
        path = self.logs_dir / relative
        private_folder(path.parent)
        write_private(path, data)
        for removed in cut_day_back(path.parent.parent, self.max_bytes):
            logger.info("artifacts of {} over logs.artifacts_max_mb: removed {}", path.parent.parent.name, removed)

    async def empty(self, name: str) -> None:
        """Empty the container's output folder (best effort: a container that does not answer is
        being replaced anyway)."""
        try:
            await self.http.delete(self._output_url(name))
        except httpx.HTTPError as error:
            logger.debug("{}: emptying the output folder: {}", name, error)
