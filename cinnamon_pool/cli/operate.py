"""The commands that act on a running pool through Redis: status, scale, kill, restart, drain."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.live import Live

from cinnamon_pool import operator
from cinnamon_pool.cli.commands import config_of
from cinnamon_pool.cli.render import status_view
from cinnamon_pool.pool import ContainerPool


def status(args: argparse.Namespace) -> int:
    pool = ContainerPool(config_of(args))
    if args.json:
        print(json.dumps(pool.status(), indent=2))
        return 0
    console = Console()
    if not args.watch:
        console.print(status_view(pool.status(), pool.stats()))
        return 0
    with Live(status_view(pool.status(), pool.stats()), console=console, screen=console.is_terminal, auto_refresh=False) as live:
        try:
            while True:
                pool.clock.sleep(args.interval)
                live.update(status_view(pool.status(), pool.stats()), refresh=True)
        except KeyboardInterrupt:
            return 0


def kill(args: argparse.Namespace) -> int:
    said = operator.kill_run(ContainerPool(config_of(args)), args.test_run_id)
    print("\n".join(said))
    return 0 if any("ended;" in line for line in said) else 1


def scale(args: argparse.Namespace) -> int:
    pool = ContainerPool(config_of(args))
    before = pool.store.snapshot().desired
    host = operator.scale_host(pool, args.size, args.host)
    deadline = pool.clock.monotonic() + args.timeout
    while pool.store.size_request(host) is not None:
        if pool.clock.monotonic() >= deadline:
            print(
                f"cinnamon-pool scale: the supervisor of host {host!r} did not take the request within {args.timeout:g} s; "
                "it stays in Redis and is applied when that supervisor runs",
                file=sys.stderr,
            )
            return 1
        pool.clock.sleep(0.2)
    now = pool.store.snapshot().desired.get(host)
    if now != args.size:
        print(f"cinnamon-pool scale: the supervisor of host {host!r} refused {args.size} (see the errors log); size {now}", file=sys.stderr)
        return 1
    print(f"host {host}: desired size {now} (was {before.get(host)}); the supervisor starts or removes containers now (never a leased one)")
    return 0


def restart(args: argparse.Namespace) -> int:
    print(operator.restart(ContainerPool(config_of(args)), args.name))
    return 0


def drain(args: argparse.Namespace) -> int:
    print(operator.drain(ContainerPool(config_of(args)), undo=args.undo))
    return 0
