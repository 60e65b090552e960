"""The log folder: read every record back (daily files and the compressed monthly archive),
and move earlier months into ``archive/YYYY-MM/``."""

from __future__ import annotations

import datetime as _dt
import gzip
import heapq
import itertools
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from cinnamon_pool.logs.format import LogRecord, parse_text
from cinnamon_pool.safefiles import open_for_reading

_DAILY = re.compile(r"container-(pool|usage|errors)-(\d{4})-(\d\d)-(\d\d)\.log(\.gz)?")


def daily_files(root: Path) -> list[Path]:
    """Every daily file, current and archived, oldest day first."""
    found = [p for p in (root / "containers").glob("container-*.log") if _DAILY.fullmatch(p.name)]
    found += [p for p in (root / "archive").glob("*/container-*.log*") if _DAILY.fullmatch(p.name)]
    found = [p for p in found if not p.is_symlink() and p.is_file()]  # what a worker planted is not the pool's log
    return sorted(found, key=lambda p: (_DAILY.fullmatch(p.name).groups()[1:4], p.name))  # type: ignore[union-attr]


def iter_records(root: str | Path, since: _dt.date | None = None, until: _dt.date | None = None) -> Iterator[LogRecord]:
    """Stream the records of every daily file in the date range, day by day, each day's three
    files merged in time order (a restart in the pool file falls between the readings around it
    in the usage file). Memory is bounded by a day, not the range."""
    for date, paths in itertools.groupby(daily_files(Path(root)), key=_date_of):
        if (since and date < since) or (until and date > until):
            continue
        day = [parse_text(_read(path)) for path in paths]
        yield from day[0] if len(day) == 1 else heapq.merge(*day, key=_time_of)


def _date_of(path: Path) -> _dt.date:
    year, month, day = (int(x) for x in _DAILY.fullmatch(path.name).groups()[1:4])  # type: ignore[union-attr]
    return _dt.date(year, month, day)


def _time_of(record: LogRecord) -> _dt.datetime:
    return record.at


def _read(path: Path) -> str:
    """The file's text (a symlink or a device among the logs raises OSError)."""
    with open_for_reading(path) as raw:
        data = gzip.GzipFile(fileobj=raw).read() if path.suffix == ".gz" else raw.read()
    return data.decode("utf-8", errors="replace")


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
        try:
            source = open_for_reading(path)
        except OSError:
            continue  # a symlink or a device planted among the logs is not ours to archive
        with source, gzip.open(partial, "wb") as sink:
            shutil.copyfileobj(source, sink)
        partial.replace(target)
        path.unlink()
        moved.append(target)
    return moved
