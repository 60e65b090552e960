"""The command line's grammar: every command and option, and which function runs it, named as
``module.function`` under ``cinnamon_pool.cli`` (main.py imports only that module)."""

from __future__ import annotations

import argparse
from typing import Any

from cinnamon_pool import __version__, console


def common_options(defaults: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name (``cinnamon-pool status
    --config x.toml`` and ``cinnamon-pool --config x.toml status`` are one). After the name they
    leave what was given before it alone unless given again."""
    common = argparse.ArgumentParser(add_help=False)
    keep: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    common.add_argument("--config", metavar="PATH", help="TOML configuration (default: $CINNAMON_CONFIG); CINNAMON_* variables win", **keep)
    common.add_argument(
        "--log-level",
        metavar="LEVEL",
        type=str.upper,
        help=f"the daemons' diagnostics on stderr from this level up: {', '.join(console.LEVELS)} (default INFO, or $CINNAMON_LOG_LEVEL)",
        **keep,
    )
    common.add_argument("--log-json", action="store_true", help="the daemons' diagnostics as one JSON object per line", **keep)
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cinnamon-pool", description="A pool of playwright-mcp containers for rq jobs.", parents=[common_options(True)]
    )
    parser.add_argument("--version", action="version", version=f"cinnamon-pool {__version__}")
    after = [common_options(False)]
    named = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    named.add_parser(
        parents=after, name="supervise", help="run the supervisor daemon (keeps the pool right, writes the logs)"
    ).set_defaults(run="daemons.supervise")
    named.add_parser(
        parents=after, name="gateway", help="run this host's gateway: the authenticated way in to the pool's containers"
    ).set_defaults(run="daemons.gateway")
    named.add_parser(
        parents=after, name="dashboard", help="serve the web dashboard: the live pool, the runs and their traces, the report, actions"
    ).set_defaults(run="daemons.dashboard")
    status = named.add_parser(parents=after, name="status", help="show the pool's containers and leases")
    status.add_argument("--json", action="store_true", help="print the documented JSON document")
    status.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    status.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="--watch refresh interval (default 1)")
    status.set_defaults(run="operate.status")
    scale = named.add_parser(parents=after, name="scale", help="set a Docker host's desired size, through its supervisor (kept in Redis)")
    scale.add_argument("size", type=int, help="within pool.min_size..max_size")
    scale.add_argument("--host", help="the Docker host (default: the pool's only one)")
    scale.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="wait this long for the supervisor (default 30)")
    scale.set_defaults(run="operate.scale")
    kill = named.add_parser(
        parents=after, name="kill", help="end the lease of a test run now: its job gets LeaseLost, the container restarts"
    )
    kill.add_argument("test_run_id", metavar="TEST_RUN_ID")
    kill.set_defaults(run="operate.kill")
    restart = named.add_parser(parents=after, name="restart", help="restart one container (after its current job, if it has one)")
    restart.add_argument("name", help="e.g. container-001")
    restart.set_defaults(run="operate.restart")
    named.add_parser(parents=after, name="doctor", help="check Docker, the image, the network and Redis; one line per check").set_defaults(
        run="commands.doctor"
    )
    drain = named.add_parser(parents=after, name="drain", help="stop granting; remove containers as they are released")
    drain.add_argument("--undo", action="store_true", help="grant again and let the supervisor refill the pool")
    drain.set_defaults(run="operate.drain")
    keys = named.add_parser(parents=after, name="keys", help="API keys for MCP clients that lease on connect")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_commands.add_parser("create", parents=after, help="create a key; prints only the key")
    create.add_argument("name", metavar="NAME", help="1-63 of a-z 0-9 _ -")
    create.add_argument("--max-sessions", type=int, default=4, metavar="N", help="sessions open at once with this key (default 4)")
    create.add_argument(
        "--unsafe-tools",
        action="store_true",
        help="its sessions may run code in the browser server (browser_run_code_unsafe); the container restarts after",
    )
    listing = keys_commands.add_parser("list", parents=after, help="name, max sessions, open now, created, last used")
    listing.add_argument("--json", action="store_true")
    revoke = keys_commands.add_parser("revoke", parents=after, help="revoke a key; its open sessions end")
    revoke.add_argument("name", metavar="NAME")
    keys.set_defaults(run="commands.keys")
    report = named.add_parser(parents=after, name="report", help="analyze the log files: per container, errors, pool figures")
    report.add_argument("--since", metavar="YYYY-MM-DD")
    report.add_argument("--until", metavar="YYYY-MM-DD", help="inclusive")
    report.add_argument("--container", metavar="NAME", help="only this container")
    report.add_argument("--json", action="store_true")
    report.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report with charts")
    report.set_defaults(run="commands.report")
    return parser
