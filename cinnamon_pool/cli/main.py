"""``cinnamon-pool``: parse, configure the daemons' console logging, run the command, and turn
what it raised into an exit code. With config/ the only place that reads the environment."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from loguru import logger

from cinnamon_pool import console
from cinnamon_pool.cli.parser import build_parser
from cinnamon_pool.connect import unavailable
from cinnamon_pool.errors import CinnamonError, ConfigError, InvalidIdentifier, RuntimeUnavailable, StoreUnavailable

DAEMONS = {"supervise", "gateway"}  # their diagnostics go through loguru (console.py)

# Bad input and errors of the surroundings (configuration, a bad name, Redis, Docker): exit 2, as
# argparse does for usage; other refusals exit 1.
SURROUNDINGS = (ConfigError, InvalidIdentifier, StoreUnavailable, RuntimeUnavailable)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = (args.log_level or os.environ.get("CINNAMON_LOG_LEVEL") or "INFO").upper()
    if level not in console.LEVELS:
        given = "--log-level" if args.log_level else "CINNAMON_LOG_LEVEL"
        print(f"cinnamon-pool {args.command}: {given}={level!r}: use one of {', '.join(console.LEVELS)}", file=sys.stderr)
        return 2
    if args.command in DAEMONS:
        console.configure(args.command, level, json=args.log_json)
    try:
        try:
            module, _, function = args.run.partition(".")
            return int(getattr(importlib.import_module(f"cinnamon_pool.cli.{module}"), function)(args))
        except Exception as error:
            loaded = getattr(args, "loaded_config", None)
            translated = unavailable(error, loaded.redis) if loaded is not None else None
            if translated is None:
                raise
            raise translated from error
    except CinnamonError as error:
        if args.command in DAEMONS:
            logger.error("{}", error)
        else:
            print(f"cinnamon-pool {args.command}: {error}", file=sys.stderr)
        return 2 if isinstance(error, SURROUNDINGS) else 1
