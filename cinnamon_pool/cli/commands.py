"""What each command does, one function per command: the configuration in, an exit code out.
Here the commands that read (``doctor``, ``report``, ``keys``); ``operate.py`` acts on a running
pool, ``daemons.py`` runs the daemons. The parser names each by its module, and only the module
of the command given is imported (``keys`` does not load the browser stack)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

from cinnamon_pool.cli.render import keys_lines, report_lines
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.connect import redis_client
from cinnamon_pool.doctor import run_checks
from cinnamon_pool.errors import ConfigError
from cinnamon_pool.lease.apikeys import ApiKeys
from cinnamon_pool.logs.analyzer import Analyzer
from cinnamon_pool.logs.files import iter_records
from cinnamon_pool.logs.html import render_html


def config_of(args: argparse.Namespace) -> PoolConfig:
    """The configuration of this invocation, read once (``--config`` before or after the command)."""
    loaded: PoolConfig | None = getattr(args, "loaded_config", None)
    if loaded is None:
        loaded = args.loaded_config = PoolConfig.load(getattr(args, "config", None), os.environ)
    return loaded


def doctor(args: argparse.Namespace) -> int:
    failed = 0
    for check in run_checks(config_of(args)):
        print(check.line(), flush=True)
        failed += check.status == "FAIL"
    return 1 if failed else 0


def report(args: argparse.Namespace) -> int:
    config = config_of(args)
    since, until = parse_day("--since", args.since), parse_day("--until", args.until)
    analyzer = Analyzer(
        since=dt.datetime.combine(since, dt.time()) if since else None,
        until=dt.datetime.combine(until + dt.timedelta(days=1), dt.time()) if until else None,
        container=args.container,
    )
    made = analyzer.feed(iter_records(config.logs.dir, since, until)).report()
    if args.html:
        Path(args.html).write_text(render_html(made), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    if args.json:
        print(json.dumps(made.to_json(), indent=2))
        return 0
    print("\n".join(report_lines(made, config.logs.dir)))
    return 0


def keys(args: argparse.Namespace) -> int:
    """API keys for leases on connect: create prints only the key; list; revoke."""
    config = config_of(args)
    api_keys = ApiKeys(redis_client(config.redis, pool=config.pool.name, socket_timeout=10), config.pool.name)
    if args.keys_command == "create":
        print(api_keys.create(args.name, args.max_sessions, unsafe_tools=args.unsafe_tools))
        return 0
    if args.keys_command == "revoke":
        if not api_keys.revoke(args.name):
            print(f"cinnamon-pool keys revoke: no key named {args.name!r} in pool {config.pool.name!r}", file=sys.stderr)
            return 1
        print(f"key {args.name!r} revoked: its open sessions end within a second")
        return 0
    listed, open_now = api_keys.list(), api_keys.open_sessions()
    if args.json:
        print(json.dumps([{**key.to_json(), "open_sessions": open_now.get(key.name, 0)} for key in listed], indent=2))
        return 0
    print("\n".join(keys_lines(listed, open_now)))
    return 0


def parse_day(option: str, text: str | None) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(option, text, "must be a date like 2025-01-31") from None
