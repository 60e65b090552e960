"""The log folder: read every record back (daily files and the compressed monthly archive),
and move earlier months into ``archive/YYYY-MM/``."""

from __future__ import annotations

import datetime as _dt
import gzip
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from cinnamon_pool.logs.format import LogRecord, parse_text

_DAILY = re.compile(r"container-(pool|usage|errors)-(\d{4})-(\d\d)-(\d\d)\.log(\.gz)?")


def daily_files(root: Path) -> list[Path]:
    """Every daily file, current and archived, oldest day first."""
    found = [p for p in (root / "containers").glob("container-*.log") if _DAILY.fullmatch(p.name)]
    found += [p for p in (root / "archive").glob("*/container-*.log*") if _DAILY.fullmatch(p.name)]
    return sorted(found, key=lambda p: (_DAILY.fullmatch(p.name).groups()[1:4], p.name))  # type: ignore[union-attr]


def iter_records(root: str | Path, since: _dt.date | None = None, until: _dt.date | None = None) -> Iterator[LogRecord]:
    """Stream the records of every daily file in the date range, one line at a time."""
    for path in daily_files(Path(root)):
        year, month, day = (int(x) for x in _DAILY.fullmatch(path.name).groups()[1:4])  # type: ignore[union-attr]
        date = _dt.date(year, month, day)
        if (since and date < since) or (until and date > until):
            continue
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            text = handle.read()  # one day's file at a time: memory is bounded by a day, not the range
        yield from parse_text(text)


def archive_earlier_months(root: str | Path, today: _dt.date) -> list[Path]:
    """Compress daily files of months before ``today``'s into ``archive/YYYY-MM/``; the
    original is removed only once its compressed copy is complete."""
    moved = []
    for path in sorted((Path(root) / "containers").glob("container-*.log")):
        match = _DAILY.fullmatch(path.name)
        if match is None:
            continue
        year, month = int(match.group(2)), int(match.group(3))
        if (year, month) >= (today.year, today.month):
            continue
        folder = Path(root) / "archive" / f"{year:04d}-{month:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / (path.name + ".gz")
        partial = target.with_suffix(".gz.partial")
        with path.open("rb") as source, gzip.open(partial, "wb") as sink:
            shutil.copyfileobj(source, sink)
        partial.replace(target)
        path.unlink()
        moved.append(target)
    return moved
