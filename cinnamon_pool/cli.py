"""``cinnamon-pool``: the operator's command line. The only place that reads the environment
(through :meth:`PoolConfig.load`) and configures console logging.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from cinnamon_pool import __version__, console
from cinnamon_pool.config import PoolConfig
from cinnamon_pool.connect import unavailable
from cinnamon_pool.door import door_for
from cinnamon_pool.errors import CinnamonError, ConfigError, InvalidIdentifier, RuntimeUnavailable, StoreUnavailable

GRACEFUL_SHUTDOWN_S = 10  # a stopping gateway waits this long for open requests and streams, then cuts them


def _config(args: argparse.Namespace) -> PoolConfig:
    """The configuration of this invocation, read once (``--config`` before or after the command)."""
    loaded: PoolConfig | None = getattr(args, "loaded_config", None)
    if loaded is None:
        loaded = args.loaded_config = PoolConfig.load(getattr(args, "config", None), os.environ)
    return loaded


def cmd_supervise(args: argparse.Namespace) -> int:
    import redis

    from cinnamon_pool.connect import describe, redis_client
    from cinnamon_pool.doctor import eviction_policy
    from cinnamon_pool.lease.store import LeaseStore
    from cinnamon_pool.logs.writer import DailyLogWriter
    from cinnamon_pool.runtime.docker import DockerRuntime
    from cinnamon_pool.supervisor.election import LeaderElection
    from cinnamon_pool.supervisor.loop import Supervisor
    from cinnamon_pool.supervisor.metrics import PoolMetrics

    config = _config(args)
    rules = config.rules
    client = redis_client(config.redis, socket_timeout=10)
    # Redis or Docker down at start: wait for each (one error per back-off), as the running
    # loop would, so a supervisor under `restart: unless-stopped` never crash-loops.
    try:
        policy = _waiting_for(f"Redis at {describe(config.redis)}", lambda e: unavailable(e, config.redis) is not None)(
            eviction_policy, client
        )
    except redis.ResponseError:
        policy = "noeviction"  # CONFIG not allowed (a managed Redis): `doctor` says to check by hand
    if policy != "noeviction":
        logger.critical(
            "refusing to start: Redis maxmemory-policy is {!r}, so it may evict lease keys and hand a container in use to a "
            "second job. Fix: CONFIG SET maxmemory-policy noeviction (and in redis.conf).",
            policy,
        )
        return 2
    runtime = _waiting_for("the Docker daemon", _docker_down)(DockerRuntime, host=config.pool.host)
    store = LeaseStore(
        client,
        config.pool.name,
        lease_ttl_s=rules.lease_ttl_s,
        max_lease_s=rules.max_lease_s,
        error_threshold=rules.error_threshold,
        host=runtime.host,
    )
    election = LeaderElection(
        store, lease_s=rules.leader_lease_s, renew_deadline_s=rules.leader_renew_deadline_s, retry_s=rules.leader_retry_s
    )
    metrics = PoolMetrics(config.pool.name)
    if config.metrics.port:
        try:
            metrics.serve(config.metrics.host, config.metrics.port)
            logger.info("metrics on http://{}:{}/metrics", config.metrics.host, config.metrics.port)
        except OSError as error:  # another supervisor on this host serves them (a standby, as a rule)
            logger.warning("no metrics endpoint on {}:{}: {}", config.metrics.host, config.metrics.port, error)
    door = door_for(config)
    supervisor = Supervisor(config, store, runtime, DailyLogWriter(config.logs.dir), election=election, metrics=metrics, door=door)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        logger.info("{}: finishing the tick; containers keep running", signal.Signals(signum).name)
        stop.set()
        supervisor.wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not config.gateway.enabled and config.gateway.prepare:
        _keep_browsers_up(config, runtime.host, election, DailyLogWriter(config.logs.dir))
    logger.info(
        "pool {!r}, {} container(s) of {}, logs in {}/containers",
        config.pool.name,
        config.pool.initial_size,
        config.container.image,
        config.logs.dir,
    )
    supervisor.run(stop)
    return 0


def _docker_down(error: BaseException) -> bool:
    """Docker does not answer (and is worth waiting for: a missing image is not)."""
    from cinnamon_pool.errors import ImageMissing

    return isinstance(error, RuntimeUnavailable) and not isinstance(error, ImageMissing)


def _waiting_for(what: str, down: Callable[[BaseException], bool]) -> Any:
    """A tenacity policy that retries a start-up call while ``what`` does not answer (``down``
    says which errors mean that), saying so once per back-off period (backoff.TICK_FAILED)."""
    from tenacity import Retrying, retry_if_exception

    from cinnamon_pool import backoff

    return Retrying(
        retry=retry_if_exception(down),
        wait=backoff.TICK_FAILED,
        before_sleep=lambda state: logger.error(
            "{} does not answer: {}; trying again in {:g} s",
            what,
            state.outcome.exception() if state.outcome else "?",
            state.upcoming_sleep,
        ),
    )


def _keep_browsers_up(config: PoolConfig, host: str, election: Any, writer: Any) -> None:
    """No gateway: hold a keeper session on each free container while this supervisor leads, so
    the browser stays up between jobs (see gateway/prepare.py). A thread with its own loop."""
    import asyncio

    import httpx

    from cinnamon_pool.clock import SYSTEM_CLOCK
    from cinnamon_pool.connect import async_redis_client
    from cinnamon_pool.gateway.prepare import Preparer
    from cinnamon_pool.logs.actions import LogAction
    from cinnamon_pool.logs.events import action_record
    from cinnamon_pool.logs.format import LogKind

    async def nothing_to_end(_name: str, _token: str) -> None:
        return None

    def report(container: str, action: LogAction, details: list[tuple[str, str]]) -> None:
        writer.write(LogKind.ERRORS, action_record(SYSTEM_CLOCK.now(), container, action, details, "ERROR"))

    async def keep() -> None:
        timeout = httpx.Timeout(config.gateway.prepare_timeout_s, connect=config.gateway.connect_timeout_s)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            client = async_redis_client(config.redis, socket_timeout=10)
            preparer = Preparer(config, client, host, http, nothing_to_end, report, keep_only=True, active=lambda: election.leading)
            await preparer.run()

    threading.Thread(target=asyncio.run, args=(keep(),), name="cinnamon-keepers", daemon=True).start()


def cmd_gateway(args: argparse.Namespace) -> int:
    import faulthandler

    import uvicorn

    from cinnamon_pool.connect import async_redis_client
    from cinnamon_pool.gateway.app import Gateway
    from cinnamon_pool.gateway.server import uvicorn_options
    from cinnamon_pool.logs.writer import DailyLogWriter
    from cinnamon_pool.runtime.docker import DockerRuntime

    config = _config(args)
    settings = config.gateway
    if not settings.enabled:
        raise ConfigError("gateway.listen", settings.listen, "is empty: this configuration has no gateway (jobs reach containers directly)")
    for key in ("tls_cert", "tls_key"):
        path = getattr(settings, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"gateway.{key}", path, "file not found")
    # the name the supervisor gives this host's records (Docker down at start: wait, as supervise does)
    host = config.pool.host or _waiting_for("the Docker daemon", _docker_down)(DockerRuntime).host
    # Every waiting session holds a connection in BLPOP, and each request in flight may need one:
    # redis-py's own cap (100 since 8.x) would leave waiters out of the queue and requests stalled.
    connections = settings.max_connections + settings.max_waiting_sessions + 16
    client = async_redis_client(config.redis, socket_timeout=5, max_connections=connections)
    gateway = Gateway(config, client, host, DailyLogWriter(config.logs.dir), door=door_for(config))
    bind, port = settings.host_port
    print(
        f"cinnamon-pool gateway: pool {config.pool.name!r}, host {host!r}, listening on {bind}:{port}; jobs get {settings.endpoint(config.pool.name, 'container-001')} ...",
        file=sys.stderr,
        flush=True,
    )

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: every thread's stack on stderr

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Open streams are cut after GRACEFUL_SHUTDOWN_S; a shutdown stuck past that says
            # where (every thread's stack on stderr) and exits, so a stop never hangs. Armed by
            # the first signal only: a second one must not put the exit off.
            if not self.should_exit:
                faulthandler.dump_traceback_later(GRACEFUL_SHUTDOWN_S + 5, exit=True)
            super().handle_exit(sig, frame)

    server = Server(
        uvicorn.Config(
            gateway.app(),
            host=bind,
            port=port,
            ssl_certfile=settings.tls_cert or None,
            ssl_keyfile=settings.tls_key or None,
            limit_concurrency=settings.max_connections,
            # longer than any client's own (httpx: 5 s), so the client, not the server, closes an
            # idle connection: the two closing at once would race (see door.js)
            timeout_keep_alive=75,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            access_log=False,
            log_level="warning",
            lifespan="on",
            **uvicorn_options(settings.header_timeout_s, settings.max_connections_per_client, gateway.connection_refused),
        )
    )
    server.run()
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    import uvicorn

    from cinnamon_pool.connect import async_redis_client
    from cinnamon_pool.dashboard.app import Dashboard, Guard, check_exposure
    from cinnamon_pool.keys import PoolKeys
    from cinnamon_pool.lease.apikeys import look_up

    config = _config(args)
    check_exposure(config)
    dashboard = Dashboard(config)
    client, keys = async_redis_client(config.redis, socket_timeout=5), PoolKeys(config.pool.name)

    async def key_valid(key: str) -> bool:
        return await look_up(client, keys, key) is not None

    settings = config.dashboard
    host, _, port = settings.listen.rpartition(":")
    scheme = "https" if settings.tls_cert else "http"
    viewer = (
        f"trace viewer {dashboard.viewer}"
        if dashboard.viewer
        else "no trace viewer found: set dashboard.trace_viewer (make images installs one)"
    )
    print(f"cinnamon-pool dashboard: pool {config.pool.name!r} on {scheme}://{settings.listen}/ ({viewer})", file=sys.stderr, flush=True)
    uvicorn.run(
        Guard(dashboard.app(), config, key_valid),
        host=host.strip("[]"),
        port=int(port),
        ssl_certfile=settings.tls_cert or None,
        ssl_keyfile=settings.tls_key or None,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from cinnamon_pool.pool import ContainerPool

    pool = ContainerPool(_config(args))
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


STATE_STYLES = {"available": "green", "allocated": "cyan", "preparing": "blue", "draining": "yellow", "restarting": "yellow"}


def status_view(status: dict[str, Any], stats: dict[str, Any]) -> Any:
    """The pool, its containers (with each lease's age) and the wait queue, as rich renders it."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    utilization = status["allocated"] / status["total"] if status["total"] else 0.0
    head = Text(
        f"pool {status['pool']}: {status['total']} container(s), {status['available']} available, {status['allocated']} allocated, "
        f"{status['restarting']} restarting, {status['unhealthy']} unhealthy, {status['waiting']} waiting; utilization {utilization:.0%}"
        + ("; DRAINED" if status.get("draining") else "")
    )
    wait = "-" if stats["wait_p50_s"] is None else f"{stats['wait_p50_s']:.3f}s / {stats['wait_p95_s']:.3f}s"
    hour = Text(f"last hour: {stats['jobs_per_hour']} jobs, wait p50/p95 {wait}, infra errors {stats['infra_error_share']:.1%}")
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = (
        "CONTAINER",
        "STATE",
        "TEST RUN",
        "LEASE AGE",
        "MEMORY",
        "CPU",
        "MCP P50",
        "ERR 1H",
        "ERRORS",
        "RESTARTS",
        "UPTIME",
        "ENDPOINT",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in {"CONTAINER", "STATE", "TEST RUN", "ENDPOINT"} else "right")
    for c in status["containers"]:
        table.add_row(
            c["name"],
            Text(c["state"], style=STATE_STYLES.get(c["state"], "red")),
            (c["test_run_id"] or "-") + (f" (key {c['client']})" if c.get("client") else ""),
            "-" if c.get("lease_age_s") is None else _duration(c["lease_age_s"]),
            "-" if c["memory_mb"] is None else f"{c['memory_mb']:.0f}MB",
            "-" if c.get("cpu_percent") is None else f"{c['cpu_percent']:.0f}%",
            "-" if c.get("mcp_p50_ms") is None else f"{c['mcp_p50_ms']:.0f}ms",
            "-" if c.get("error_rate") is None else f"{c['error_rate']:.0%}",
            str(c["error_count"]),
            str(c["restarts"]),
            "-" if c.get("uptime_s") is None else _duration(c["uptime_s"]),
            c["endpoint"],
        )
    parts: list[Any] = [head, hour, table]
    if status.get("queue"):
        queue = Table(title="waiting, first in line first", title_justify="left", box=None, pad_edge=False, header_style="bold")
        for column in ("#", "TEST RUN", "WAITING", "WORKER"):
            queue.add_column(column)
        for position, waiter in enumerate(status["queue"], 1):
            queue.add_row(str(position), waiter["test_run_id"], _duration(waiter["waiting_s"]), waiter["worker"] or "-")
        parts.append(queue)
    return Group(*parts)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def cmd_kill(args: argparse.Namespace) -> int:
    from cinnamon_pool import operator
    from cinnamon_pool.pool import ContainerPool

    said = operator.kill_run(ContainerPool(_config(args)), args.test_run_id)
    print("\n".join(said))
    return 0 if any("ended;" in line for line in said) else 1


def cmd_scale(args: argparse.Namespace) -> int:
    from cinnamon_pool import operator
    from cinnamon_pool.pool import ContainerPool

    pool = ContainerPool(_config(args))
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


def cmd_restart(args: argparse.Namespace) -> int:
    from cinnamon_pool import operator
    from cinnamon_pool.pool import ContainerPool

    print(operator.restart(ContainerPool(_config(args)), args.name))
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    from cinnamon_pool import operator
    from cinnamon_pool.pool import ContainerPool

    print(operator.drain(ContainerPool(_config(args)), undo=args.undo))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from cinnamon_pool.doctor import run_checks

    failed = 0
    for check in run_checks(_config(args)):
        print(check.line(), flush=True)
        failed += check.status == "FAIL"
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    import datetime as dt

    from cinnamon_pool.logs.analyzer import Analyzer
    from cinnamon_pool.logs.files import iter_records
    from cinnamon_pool.logs.html import render_html

    config = _config(args)
    since, until = (_parse_day("--since", args.since), _parse_day("--until", args.until))
    analyzer = Analyzer(
        since=dt.datetime.combine(since, dt.time()) if since else None,
        until=dt.datetime.combine(until + dt.timedelta(days=1), dt.time()) if until else None,
        container=args.container,
    )
    report = analyzer.feed(iter_records(config.logs.dir, since, until)).report()
    if args.html:
        Path(args.html).write_text(render_html(report), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    pool = report["pool"]
    print(f"{report['records']} records from {report['from']} to {report['until']} in {config.logs.dir}")
    for advice in report["recommendations"]:
        print(f"{advice['severity'].upper():<5} {advice['kind']}: {advice['message']}")
    print(
        f"pool: utilization {pool['utilization']:.1%}, wait p50 {pool['wait_p50_s']} s, p95 {pool['wait_p95_s']} s, {pool['throughput_per_hour']} jobs/hour"
    )
    row = "{:<15} {:>6} {:>9} {:<11} {:>8} {:>9} {:<6}"
    print(row.format("CONTAINER", "TESTS", "AVG TEST", "MEMORY", "ERRORS", "RESTARTS", "RISK"))
    for name, c in report["containers"].items():
        average = "-" if c["average_duration_s"] is None else f"{c['average_duration_s']:.2f}s"
        print(row.format(name, c["tests"], average, c["memory_trend"], f"{c['error_rate']:.1%}", c["restarts"], c["risk"]))
    for name, c in report["clients"].items():
        print(f"client {name}: {c['sessions']} sessions on connect, wait p50 {c['wait_p50_s']} s, p95 {c['wait_p95_s']} s")
    errors = report["errors"]
    for entry in errors["common"]:
        print(f"  {entry['count']:>6} x {entry['error']}" + (f" (in {entry['context']})" if entry["context"] else ""))
    print(
        f"leaking: {', '.join(errors['leaking_containers']) or 'none'}; restarted often: {', '.join(errors['frequently_restarted']) or 'none'}"
    )
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """API keys for leases on connect: create prints only the key; list; revoke."""
    from cinnamon_pool.connect import redis_client
    from cinnamon_pool.lease.apikeys import ApiKeys

    config = _config(args)
    client = redis_client(config.redis, socket_timeout=10)
    keys = ApiKeys(client, config.pool.name)
    if args.keys_command == "create":
        print(keys.create(args.name, args.max_sessions, unsafe_tools=args.unsafe_tools))
        return 0
    if args.keys_command == "revoke":
        if not keys.revoke(args.name):
            print(f"cinnamon-pool keys revoke: no key named {args.name!r} in pool {config.pool.name!r}", file=sys.stderr)
            return 1
        print(f"key {args.name!r} revoked: its open sessions end within a second")
        return 0
    listed = keys.list()
    open_now = keys.open_sessions()
    if args.json:
        print(json.dumps([{**key.to_json(), "open_sessions": open_now.get(key.name, 0)} for key in listed], indent=2))
        return 0
    row = "{:<24} {:>12} {:>9} {:<20} {:<20} {}"
    print(row.format("NAME", "MAX SESSIONS", "OPEN NOW", "CREATED", "LAST USED", "UNSAFE TOOLS"))
    for key in listed:
        shown = (
            key.max_sessions,
            open_now.get(key.name, 0),
            _ms(key.created_ms),
            _ms(key.last_used_ms),
            "yes" if key.unsafe_tools else "no",
        )
        print(row.format(key.name, *shown))
    return 0


def _ms(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="seconds") if ms else "-"


def _parse_day(option: str, text: str | None) -> Any:
    import datetime as dt

    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(option, text, "must be a date like 2025-01-31") from None


def _common_options(defaults: bool) -> argparse.ArgumentParser:
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
        prog="cinnamon-pool", description="A pool of playwright-mcp containers for rq jobs.", parents=[_common_options(True)]
    )
    parser.add_argument("--version", action="version", version=f"cinnamon-pool {__version__}")
    after = [_common_options(False)]
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        parents=after, name="supervise", help="run the supervisor daemon (keeps the pool right, writes the logs)"
    ).set_defaults(run=cmd_supervise)
    commands.add_parser(
        parents=after, name="gateway", help="run this host's gateway: the authenticated way in to the pool's containers"
    ).set_defaults(run=cmd_gateway)
    commands.add_parser(
        parents=after, name="dashboard", help="serve the web dashboard: the live pool, the runs and their traces, the report, actions"
    ).set_defaults(run=cmd_dashboard)
    status = commands.add_parser(parents=after, name="status", help="show the pool's containers and leases")
    status.add_argument("--json", action="store_true", help="print the documented JSON document")
    status.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    status.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="--watch refresh interval (default 1)")
    status.set_defaults(run=cmd_status)
    scale = commands.add_parser(
        parents=after, name="scale", help="set a Docker host's desired size, through its supervisor (kept in Redis)"
    )
    scale.add_argument("size", type=int, help="within pool.min_size..max_size")
    scale.add_argument("--host", help="the Docker host (default: the pool's only one)")
    scale.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="wait this long for the supervisor (default 30)")
    scale.set_defaults(run=cmd_scale)
    kill = commands.add_parser(
        parents=after, name="kill", help="end the lease of a test run now: its job gets LeaseLost, the container restarts"
    )
    kill.add_argument("test_run_id", metavar="TEST_RUN_ID")
    kill.set_defaults(run=cmd_kill)
    restart = commands.add_parser(parents=after, name="restart", help="restart one container (after its current job, if it has one)")
    restart.add_argument("name", help="e.g. container-001")
    restart.set_defaults(run=cmd_restart)
    commands.add_parser(
        parents=after, name="doctor", help="check Docker, the image, the network and Redis; one line per check"
    ).set_defaults(run=cmd_doctor)
    drain = commands.add_parser(parents=after, name="drain", help="stop granting; remove containers as they are released")
    drain.add_argument("--undo", action="store_true", help="grant again and let the supervisor refill the pool")
    drain.set_defaults(run=cmd_drain)
    keys = commands.add_parser(parents=after, name="keys", help="API keys for MCP clients that lease on connect")
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
    keys.set_defaults(run=cmd_keys)
    report = commands.add_parser(parents=after, name="report", help="analyze the log files: per container, errors, pool figures")
    report.add_argument("--since", metavar="YYYY-MM-DD")
    report.add_argument("--until", metavar="YYYY-MM-DD", help="inclusive")
    report.add_argument("--container", metavar="NAME", help="only this container")
    report.add_argument("--json", action="store_true")
    report.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report with charts")
    report.set_defaults(run=cmd_report)
    return parser


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
            return int(args.run(args))
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


if __name__ == "__main__":
    sys.exit(main())
