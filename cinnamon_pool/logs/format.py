"""The log record format, and its parser beside it (tested as a round trip).

    [2025-01-08 14:30:15] INFO  container-001 | ALLOCATED
      └─ Test Run: test-run-123
      └─ Memory Usage: 180MB
      └─ Available Containers: 1

Records are separated by a blank line. A record spans several lines, but no value can break one: backslashes, control characters,
Unicode line/paragraph separators and bidi controls in values are written as escapes
(``\\n``, ``\\x1b``, ``\\u2028``) and read back by :func:`parse`.
"""

from __future__ import annotations

import datetime as _dt
import enum
import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

DETAIL_PREFIX = "  └─ "
_HEAD = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] (\w+) +(.*?) \| (.*)")
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNNAMED = {v: k for k, v in _NAMED.items()}
_BIDI_AND_SEPARATORS = set("\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff")


class LogKind(enum.StrEnum):
    """Which daily file a record goes to."""

    POOL = "pool"
    USAGE = "usage"
    ERRORS = "errors"


class LogRecord(NamedTuple):
    """One record. A NamedTuple rather than a dataclass: the analyzer builds millions."""

    at: _dt.datetime
    level: str
    subject: str  # a container name, or "pool"
    action: str
    details: tuple[tuple[str, str], ...] = ()

    def detail(self, key: str, default: str = "") -> str:
        return next((value for k, value in self.details if k == key), default)


def escape(value: object) -> str:
    out = []
    for char in str(value):
        code = ord(char)
        if char in _NAMED:
            out.append(_NAMED[char])
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            out.append(f"\\x{code:02x}")
        elif char in _BIDI_AND_SEPARATORS:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


_ESCAPE = re.compile(r"\\(\\|n|r|t|x[0-9a-f]{2}|u[0-9a-f]{4})")


def unescape(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        token = "\\" + match.group(1)
        if token in _UNNAMED:
            return _UNNAMED[token]
        return chr(int(match.group(1)[1:], 16))

    return _ESCAPE.sub(replace, text)


def render(record: LogRecord) -> str:
    lines = [f"[{record.at.strftime(_TIME_FORMAT)}] {record.level:<5} {escape(record.subject)} | {escape(record.action)}\n"]
    for key, value in record.details:
        key_text = escape(key).replace(":", "\\x3a")  # the first ": " of a detail line ends the key
        lines.append(f"{DETAIL_PREFIX}{key_text}: {escape(value)}\n")
    lines.append("\n")  # records are separated by a blank line, as in the seed
    return "".join(lines)


def parse(lines: Iterable[str]) -> Iterator[LogRecord]:
    """Records from lines of a log file, streaming; lines that belong to no record are skipped.

    Written for speed (the analyzer reads months of these): plain string slicing, and
    ``unescape`` only where a backslash shows there is something to undo."""
    head: tuple[_dt.datetime, str, str, str] | None = None
    details: list[tuple[str, str]] = []
    prefix_length = len(DETAIL_PREFIX)
    from_iso = _dt.datetime.fromisoformat
    for line in lines:
        if line.startswith(DETAIL_PREFIX):
            if head is not None:
                key, _, value = line[prefix_length:].rstrip("\n").partition(": ")
                details.append((unescape(key) if "\\" in key else key, unescape(value) if "\\" in value else value))
            continue
        line = line.rstrip("\n")
        if len(line) < 26 or line[0] != "[" or line[20] != "]":
            continue
        subject, separator, action = line[22:].partition(" | ")
        level, _, subject = subject.partition(" ")
        try:
            at = from_iso(line[1:20])
        except ValueError:
            continue
        if not separator or not level.isalpha():
            continue
        if head is not None:
            yield LogRecord(*head, details=tuple(details))
        subject = subject.lstrip(" ")
        head = (at, level, unescape(subject) if "\\" in subject else subject, unescape(action) if "\\" in action else action)
        details = []
    if head is not None:
        yield LogRecord(*head, details=tuple(details))


def parse_text(text: str) -> Iterator[LogRecord]:
    """The records of one whole file's text (a day's file at most): the analyzer's fast path,
    the same result as :func:`parse` over its lines."""
    prefix_length = len(DETAIL_PREFIX)
    from_iso = _dt.datetime.fromisoformat
    for chunk in ("\n" + text).split("\n["):
        if len(chunk) < 25 or chunk[19] != "]":
            continue
        lines = chunk.split("\n")
        line = lines[0]
        subject, separator, action = line[21:].partition(" | ")
        level, _, subject = subject.partition(" ")
        if not separator or not level.isalpha():
            continue
        try:
            at = from_iso(line[:19])
        except ValueError:
            continue
        subject = subject.lstrip(" ")
        pairs = [d[prefix_length:].partition(": ") for d in lines[1:] if d[:prefix_length] == DETAIL_PREFIX]
        if "\\" in chunk:
            details = tuple((unescape(k), unescape(v)) for k, _, v in pairs)
            subject, action = unescape(subject), unescape(action)
        else:
            details = tuple((k, v) for k, _, v in pairs)
        yield LogRecord(at, level, subject, action, details)
