"""The daemons' own diagnostics (what `supervise` and `gateway` say on stderr), through loguru:
a level per message, ``--log-level`` to choose what shows, ``--log-json`` for one JSON object
per line (loguru's ``serialize``).

The seed-format daily files are not written here: they are a file format
(``logs/writer.py``), read back by the analyzer. As a library (``@with_container`` in a worker)
the package leaves loguru's configuration to the application; only the CLI calls
:func:`configure`.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from loguru import logger

LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} cinnamon-pool {extra[command]}: {message}"


def configure(command: str, level: str = "INFO", *, json: bool = False, sink: TextIO | Any = None) -> None:
    """Send the process's diagnostics to ``sink`` (stderr) at ``level`` and above, as text or JSON."""
    if level.upper() not in LEVELS:
        raise ValueError(f"--log-level {level!r}: use one of {', '.join(LEVELS)}")
    logger.remove()
    logger.configure(extra={"command": command})
    logger.add(sink or sys.stderr, level=level.upper(), format=FORMAT, serialize=json, backtrace=False, diagnose=False)
