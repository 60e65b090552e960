"""Append records to the daily files; a failing disk never stops the pool.

    <dir>/containers/container-pool-YYYY-MM-DD.log     lifecycle: started, restarted, replaced...
    <dir>/containers/container-usage-YYYY-MM-DD.log    leases: allocated, released, cleanup
    <dir>/containers/container-errors-YYYY-MM-DD.log   errors

File names come from the record's date and a fixed kind, never from raw input. A write that
fails (full disk, directory removed or unwritable) is dropped with one warning (loguru: the daemon's diagnostics on stderr) per
``report_every_s``; writing resumes by itself when the disk recovers (the directory is made
again on every write that finds it missing).
"""

from __future__ import annotations

from pathlib import Path

from loguru import logger

from cinnamon_pool.clock import SYSTEM_CLOCK, Clock
from cinnamon_pool.logs.format import LogKind, LogRecord, render
from cinnamon_pool.safefiles import append_text


class DailyLogWriter:
    def __init__(self, root: str | Path, *, clock: Clock = SYSTEM_CLOCK, report_every_s: float = 60.0) -> None:
        self.root = Path(root)
        self.clock = clock
        self.report_every_s = report_every_s
        self._last_report: float | None = None
        self.dropped = 0

    def path_for(self, kind: LogKind, record: LogRecord) -> Path:
        return self.root / "containers" / f"container-{LogKind(kind).value}-{record.at:%Y-%m-%d}.log"

    def write(self, kind: LogKind, record: LogRecord) -> bool:
        """Append one record; False (and counted in ``dropped``) when the disk refused it."""
        path = self.path_for(kind, record)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            append_text(path, render(record))  # never through a symlink planted in the folder
        except OSError as error:
            self.dropped += 1
            now = self.clock.monotonic()
            if self._last_report is None or now - self._last_report >= self.report_every_s:
                self._last_report = now
                logger.warning("cannot write {}: {} (dropped {} record(s) so far)", path, error, self.dropped)
            return False
        return True
