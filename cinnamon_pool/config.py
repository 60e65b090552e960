"""Pool configuration: a frozen dataclass per TOML table, validated loudly.

Built by entry points from a TOML file (``--config PATH`` or ``CINNAMON_CONFIG``) and the
``CINNAMON_*`` variables, the environment winning over the file. Unknown keys and bad values
raise :class:`ConfigError` naming the key (``pool.min_size``) or variable and the value.
No module reads the environment on its own: callers pass ``environ``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cinnamon_pool.errors import ConfigError, InvalidIdentifier
from cinnamon_pool.model import SLOTS_PER_HOST, local_slot, validate_host, validate_pool_name

DEFAULT_COMMAND = (
    "--headless",
    "--browser",
    "chromium",
    "--isolated",
    "--port",
    "8931",
    "--host",
    "0.0.0.0",
)  # fmt: skip  (the pool adds --allowed-hosts: see ContainerTemplate.command_for)


OUTPUT_DIR = "/tmp/cinnamon-output"  # playwright-mcp's --output-dir in a pool container (on its tmpfs): traces, video
PLAYWRIGHT_IDLE_TIMEOUT_S = 3600.0  # playwright-mcp's own --idle-timeout default (since 0.0.81)


def idle_timeout_s(command: Sequence[str]) -> float | None:
    """The server's ``--idle-timeout`` (ms on the command line) in seconds; None when not set or 0."""
    for index, argument in enumerate(command):
        value = argument.partition("=")[2] if argument.startswith("--idle-timeout=") else None
        if argument == "--idle-timeout" and index + 1 < len(command):
            value = command[index + 1]
        if value is not None and re.fullmatch(r"\d+", value) and int(value) > 0:
            return int(value) / 1000
    return None


@dataclass(frozen=True)
class RedisSettings:
    """Where the lease store lives. With ``sentinels``, the primary of ``service`` as Redis
    Sentinel reports it (followed across failovers); ``url`` then gives only the database number
    and the credentials. ``wait_replicas``: how many replicas must acknowledge a grant before it
    is returned (Redis WAIT); -1 means 1 with sentinels and 0 without."""

    url: str = "redis://127.0.0.1:6379/0"
    sentinels: tuple[str, ...] = ()  # "host:port" of each Sentinel
    service: str = ""  # the primary's name in Sentinel (its `sentinel monitor <name> ...` line)
    wait_replicas: int = -1
    wait_timeout_ms: int = 500

    @property
    def replicas_to_wait(self) -> int:
        if self.wait_replicas >= 0:
            return self.wait_replicas
        return 1 if self.sentinels else 0

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(host, int(port)) for host, _, port in (entry.rpartition(":") for entry in self.sentinels)]


@dataclass(frozen=True)
class PoolSettings:
    name: str = "default"
    min_size: int = 2
    max_size: int = 10
    initial_size: int = 2
    host: str = ""  # this Docker host's name in the pool; "" = the name Docker reports (docker info)


@dataclass(frozen=True)
class ContainerTemplate:
    """How every container of the pool is created. Comes from configuration only, never Redis."""

    image: str = "mcr.microsoft.com/playwright/mcp:latest"  # may be pinned by digest: name@sha256:<hex>
    image_id: str = ""  # "sha256:<hex>": start containers only from the image with this id (a locally built one)
    command: tuple[str, ...] = DEFAULT_COMMAND
    port: int = 8931
    env: Mapping[str, str] = field(default_factory=dict)
    volumes: tuple[str, ...] = ()
    user: str = ""
    read_only: bool = True
    tmpfs: tuple[str, ...] = ("/tmp",)
    memory: str = "512m"
    cpus: float = 0.5
    pids_limit: int = 512
    network: str = "cinnamon-qa-network"
    host_port_range: str = "3000-3999"
    webmcp: bool = False  # let pages under test add tools of their own (playwright-mcp's WebMCP); off: --no-webmcp
    # let holders run code in the browser server (browser_run_code_unsafe) through the gateway;
    # a container that ran some restarts before its next lease (gateway/unsafe.py)
    unsafe_tools: bool = False
    # Chromium keeps its own sandbox (the pool passes --sandbox and a seccomp profile that allows
    # its namespaces, runtime/seccomp.py); false, or --no-sandbox in the command: --no-sandbox
    chromium_sandbox: bool = True
    # "restricted": the supervisor keeps host firewall rules for the pool network (runtime/egress.py):
    # the host itself, the private ranges and 169.254.0.0/16 are refused but for egress_allow;
    # "open": no rules (the containers reach whatever the host reaches)
    egress: str = "restricted"
    egress_allow: tuple[str, ...] = ()  # CIDRs the application under test needs, e.g. "10.1.2.0/24"
    door_key: str = ""  # the host key the containers' door secrets derive from (see door.py); "" = the default path
    idle_timeout_s: float = PLAYWRIGHT_IDLE_TIMEOUT_S  # playwright-mcp's --idle-timeout: an idle browser closes after this; 0 = never
    # A Playwright trace of every lease, started in the gateway's prepared session (gateway/traces.py);
    # the pool adds --caps devtools and --output-dir. Kept by the holder's artifacts policy.
    artifacts_trace: bool = True
    artifacts_video: bool = False  # a video of the lease beside the trace (more CPU and disk)
    # the trace's screencast too (the viewer's filmstrip): 1.25x a sign-in job's time at 0.5 CPU
    artifacts_screenshots: bool = False

    @property
    def memory_bytes(self) -> int:
        return parse_memory(self.memory, "container.memory")

    @property
    def host_ports(self) -> range:
        low, high = (int(p) for p in self.host_port_range.split("-"))
        return range(low, high + 1)

    def local_url(self, name: str) -> str:
        """A container's MCP URL on its own host: its slot's published port on 127.0.0.1."""
        return f"http://127.0.0.1:{self.host_ports[local_slot(int(name.rsplit('-', 1)[1])) - 1]}/mcp"

    def command_for(self, host_port: int | None) -> tuple[str, ...]:
        """The command one container runs: the configured one, plus what the pool sets unless the
        command sets it itself or is empty (the image's own): ``--allowed-hosts`` limited to the
        Host value that the gateway, the probes and direct clients send (``127.0.0.1:<its
        published port>``), ``--no-webmcp`` unless ``webmcp``, ``--idle-timeout`` (ms), and
        ``--sandbox`` (or ``--no-sandbox`` without ``chromium_sandbox``), and ``egress_allow`` as
        Chromium's proxy bypass (the local image sends every other page to a dead proxy)."""
        if not self.command:
            return self.command
        command = list(self.command)
        if "--sandbox" not in command and "--no-sandbox" not in command:
            command.append("--sandbox" if self.chromium_sandbox else "--no-sandbox")
        if self.egress_allow and "--proxy-bypass" not in command:  # (the local image's dead proxy: pages go direct there)
            command += ["--proxy-bypass", ",".join(["localhost", "127.0.0.1", *self.egress_allow])]
        if "--allowed-hosts" not in command and host_port is not None:
            command += ["--allowed-hosts", f"127.0.0.1:{host_port}"]
        if not self.webmcp and "--no-webmcp" not in command:
            command.append("--no-webmcp")
        if not any(arg == "--idle-timeout" or arg.startswith("--idle-timeout=") for arg in command):
            command += ["--idle-timeout", str(round(self.idle_timeout_s * 1000))]
        if self.artifacts_trace or self.artifacts_video:
            _add_capability(command, "devtools")
            if "--output-dir" not in command:
                command += ["--output-dir", OUTPUT_DIR]
        return tuple(command)

    @property
    def records(self) -> bool:
        """The pool records a trace (or video) per lease: asked for, and the pool sets the command."""
        return bool(self.command) and (self.artifacts_trace or self.artifacts_video)

    @property
    def sandboxed(self) -> bool:
        """Chromium runs with its sandbox: the command asks for it (the pool then gives the
        container the seccomp profile that lets it make its namespaces)."""
        return "--sandbox" in self.command_for(None)

    @property
    def sandbox_state(self) -> str:
        """What ``doctor`` says of it."""
        if self.sandboxed:
            return "on (--sandbox; seccomp profile allowing Chromium's namespaces)"
        if not self.command:
            return "as the image's own command has it (container.command is empty)"
        if not self.chromium_sandbox:
            return "off (container.chromium_sandbox = false: --no-sandbox)"
        return "off (container.command has --no-sandbox)"

    @property
    def browser_idle_s(self) -> float | None:
        """After how long without a call the server closes its browser (None: never), as the
        command it runs says; the image's own command keeps playwright-mcp's default (1 h). The
        pool keeps prepared sessions warm inside it."""
        command = self.command_for(None)
        return idle_timeout_s(command) if command else PLAYWRIGHT_IDLE_TIMEOUT_S


def _add_capability(command: list[str], capability: str) -> None:
    """``--caps a,b`` gains ``capability`` (or is added)."""
    if "--caps" in command:
        at = command.index("--caps") + 1
        if at < len(command) and capability not in command[at].split(","):
            command[at] = f"{command[at]},{capability}"
    else:
        command += ["--caps", capability]


@dataclass(frozen=True)
class Rules:
    max_memory_mb: int = 400
    error_threshold: int = 3
    health_interval_s: float = 10.0
    health_timeout_s: float = 5.0
    health_failures: int = 3
    lease_ttl_s: float = 30.0
    max_lease_s: float = 1800.0
    tick_s: float = 2.0
    idle_shrink_s: float = 300.0
    scale_cooldown_s: float = 30.0
    leader_lease_s: float = 15.0
    leader_renew_deadline_s: float = 10.0
    leader_retry_s: float = 2.0
    canary_share: float = 0.1
    canary_timeout_s: float = 15.0
    cleanup_timeout_s: float = 2.0
    residue_processes: int = 10


@dataclass(frozen=True)
class LogSettings:
    dir: str = "logs"
    # a trace over this many MB is not kept, and a day's artifacts folder is cut back to it,
    # oldest runs' traces first
    artifacts_max_mb: int = 1024


@dataclass(frozen=True)
class GatewaySettings:
    """``cinnamon-pool gateway``: the one authenticated way in to this host's containers."""

    listen: str = "127.0.0.1:8930"  # host:port; "" = no gateway, jobs get the containers' own URLs
    advertise_url: str = ""  # what workers elsewhere use; "" = http(s)://<listen>
    tls_cert: str = ""  # both or neither
    tls_key: str = ""
    max_body_bytes: int = 8 * 1024 * 1024  # a larger request body is refused with 413
    body_timeout_s: float = 10.0  # a request body must arrive whole within this, else 408 (nothing forwarded)
    header_timeout_s: float = 10.0  # a request head (line and headers) must arrive whole within this, else 408
    connect_timeout_s: float = 5.0  # a container that does not accept within this: 502
    upstream_timeout_s: float = 120.0  # a container's answer to a POST or DELETE must begin within this: 504
    max_connections: int = 1000  # past this many at once, new requests get 503
    max_connections_per_client: int = 250  # connections from one address at once; past it, 429 and closed
    max_streams_per_lease: int = 100  # requests and streams in flight under one lease; past it, 429
    # Prepared sessions (see gateway/prepare.py): each free container holds one MCP session with
    # its browser up and a blank page, handed to the next job at its `initialize`.
    prepare: bool = True
    prepare_timeout_s: float = 20.0  # a release waits at most this for the next session, then is offered anyway
    prepare_refresh_s: float = 600.0  # a prepared session idle this long is made anew
    # Leases on connect (gateway/connect.py): an MCP client with an API key gets a container.
    session_acquire_timeout_s: float = 60.0  # an initialize waits this long for a container, then 503
    session_idle_s: float = 60.0  # a session with no request in flight or within this long ends
    max_waiting_sessions: int = 100  # initializes waiting on one gateway; past it, 503 at once
    # The gateway URLs a holder sends its token to (a grant naming another URL is refused);
    # () = this file's own gateway URL. A pool of several hosts lists each host's advertise_url.
    trusted_urls: tuple[str, ...] = ()
    allow_plain_http: bool = False  # trust http:// URLs away from loopback (default: https only there)

    @property
    def prepares(self) -> bool:
        """Released containers wait for their next session (and jobs get it at `initialize`)."""
        return self.enabled and self.prepare

    @property
    def enabled(self) -> bool:
        return bool(self.listen)

    @property
    def base_url(self) -> str:
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        return f"{'https' if self.tls_cert else 'http'}://{self.listen}"

    def endpoint(self, pool: str, name: str) -> str:
        """The MCP URL a job gets for a container behind this gateway."""
        return f"{self.base_url}/{pool}/{name}/mcp"

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class WorkerSettings:
    """``rq worker -w cinnamon_pool.worker.Worker``: what a job read from Redis may make it run."""

    allowed_functions: tuple[str, ...] = ()  # modules ("workers", "app.jobs"): theirs and their submodules' functions; () = any
    allow_pickle: bool = False  # rq's default serializer: whoever writes to Redis would run code in the workers

    def allows(self, func_name: str) -> bool:
        """Whether the job function ``func_name`` ("module.function") may run."""
        modules = (entry.rstrip(".") for entry in self.allowed_functions)
        return not self.allowed_functions or any(func_name == m or func_name.startswith(m + ".") for m in modules)


@dataclass(frozen=True)
class MetricsSettings:
    host: str = "127.0.0.1"
    port: int = 9464  # 0 turns the endpoint off


@dataclass(frozen=True)
class DashboardSettings:
    """``cinnamon-pool dashboard``: the live pool, the runs and their traces, operator actions."""

    listen: str = "127.0.0.1:8940"
    password: str = ""  # HTTP Basic (any user name); required, or an API key, away from loopback
    tls_cert: str = ""  # both or neither: HTTPS
    tls_key: str = ""
    allow_plain_http: bool = False  # serve away from loopback without TLS
    trace_viewer: str = ""  # playwright-core's lib/vite/traceViewer folder; "" = the one beside the built image

    def validate(self) -> None:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError("dashboard.listen", self.listen, 'must be "host:port" (e.g. "127.0.0.1:8940")')
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError(
                "dashboard.tls_cert" if not self.tls_cert else "dashboard.tls_key", "", "set both tls_cert and tls_key, or neither"
            )

    @property
    def loopback(self) -> bool:
        return self.listen.rpartition(":")[0].strip("[]") in {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class PoolConfig:
    redis: RedisSettings = field(default_factory=RedisSettings)
    pool: PoolSettings = field(default_factory=PoolSettings)
    container: ContainerTemplate = field(default_factory=ContainerTemplate)
    rules: Rules = field(default_factory=Rules)
    logs: LogSettings = field(default_factory=LogSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)

    @classmethod
    def load(cls, path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> PoolConfig:
        """Read ``path`` (or ``CINNAMON_CONFIG``), then apply ``CINNAMON_*`` variables, then validate."""
        environ = environ or {}
        source = "--config" if path else "CINNAMON_CONFIG"
        path = path or environ.get("CINNAMON_CONFIG") or None
        tables: dict[str, dict[str, Any]] = {}
        if path is not None:
            tables = _read_toml(Path(path), source)
        for variable, dotted in ENV_VARIABLES.items():
            if variable in environ:
                section, key = dotted.split(".")
                tables.setdefault(section, {})[key] = _from_env(variable, environ[variable], section, key)
        return cls.from_tables(tables)

    @classmethod
    def from_tables(cls, tables: Mapping[str, Any]) -> PoolConfig:
        sections: dict[str, Any] = {}
        for section_field in dataclasses.fields(cls):
            raw = tables.get(section_field.name, {})
            if not isinstance(raw, Mapping):
                raise ConfigError(section_field.name, raw, "must be a table")
            section_type = _SECTION_TYPES[section_field.name]
            sections[section_field.name] = _build_section(section_field.name, section_type, raw)
        unknown = set(tables) - set(sections)
        if unknown:
            name = sorted(unknown)[0]
            raise ConfigError(name, tables[name], f"unknown table (known: {', '.join(sorted(sections))})")
        config = cls(**sections)
        config.validate()
        return config

    def validate(self) -> None:
        """Check the rules that span keys; single values were checked when parsed."""
        pool, rules, template = self.pool, self.rules, self.container
        validate_pool_name(pool.name)
        if pool.host:
            try:
                validate_host(pool.host)
            except InvalidIdentifier as error:
                raise ConfigError("pool.host", pool.host, error.reason) from None
        if pool.min_size < 0:
            raise ConfigError("pool.min_size", pool.min_size, "must be >= 0")
        if not 1 <= pool.max_size < SLOTS_PER_HOST:
            raise ConfigError("pool.max_size", pool.max_size, f"must be 1..{SLOTS_PER_HOST - 1} (per Docker host)")
        if pool.min_size > pool.max_size:
            raise ConfigError("pool.min_size", pool.min_size, f"must be <= pool.max_size ({pool.max_size})")
        if not pool.min_size <= pool.initial_size <= pool.max_size:
            raise ConfigError(
                "pool.initial_size", pool.initial_size, f"must be within pool.min_size..pool.max_size ({pool.min_size}..{pool.max_size})"
            )
        if not re.fullmatch(r"(redis|rediss|unix)://.+", self.redis.url):
            raise ConfigError("redis.url", redact(self.redis.url), "must start with redis://, rediss:// or unix://")
        for entry in self.redis.sentinels:
            if not re.fullmatch(r"[^\s:]+:\d{1,5}", entry) or not 0 < int(entry.rpartition(":")[2]) <= 65535:
                raise ConfigError("redis.sentinels", entry, 'each must be "host:port" of a Sentinel')
        if self.redis.sentinels and not self.redis.service:
            raise ConfigError("redis.service", self.redis.service, "must name the primary Sentinel monitors when redis.sentinels is set")
        if self.redis.wait_replicas < -1:
            raise ConfigError("redis.wait_replicas", self.redis.wait_replicas, "must be >= 0 (or -1: 1 with sentinels, 0 without)")
        if self.redis.wait_timeout_ms <= 0:
            raise ConfigError("redis.wait_timeout_ms", self.redis.wait_timeout_ms, "must be > 0")
        parse_memory(template.memory, "container.memory")
        if template.image_id and not re.fullmatch(r"sha256:[0-9a-f]{64}", template.image_id):
            raise ConfigError(
                "container.image_id", template.image_id, 'must be "sha256:" and 64 hex digits (docker image inspect -f {{.Id}})'
            )
        if "@" in template.image and not re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", template.image):
            raise ConfigError("container.image", template.image, "a digest pin must look like name@sha256:<64 hex digits>")
        _check_port_range(template.host_port_range)
        if not 0 <= self.metrics.port <= 65535:
            raise ConfigError("metrics.port", self.metrics.port, "must be a TCP port, or 0 for no metrics endpoint")
        if not 1 <= template.port <= 65535:
            raise ConfigError("container.port", template.port, "must be a TCP port (1-65535)")
        if template.cpus <= 0:
            raise ConfigError("container.cpus", template.cpus, "must be > 0")
        if template.idle_timeout_s < 0:
            raise ConfigError(
                "container.idle_timeout_s", template.idle_timeout_s, "must be >= 0 (0 = the browser never closes for idleness)"
            )
        if template.egress not in {"restricted", "open"}:
            raise ConfigError("container.egress", template.egress, 'must be "restricted" or "open"')
        for cidr in template.egress_allow:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError("container.egress_allow", cidr, 'must be an IPv4 address or CIDR ("10.1.2.0/24")') from None
            if ":" in cidr:
                raise ConfigError("container.egress_allow", cidr, "must be IPv4 (the pool network is IPv4)")
        for volume in template.volumes:
            if not re.fullmatch(r"[^:]+:/[^:]*(:(ro|rw))?", volume):
                raise ConfigError("container.volumes", volume, 'must be "host:container[:ro|rw]"')
        if len(template.host_ports) < pool.max_size:
            raise ConfigError(
                "container.host_port_range", template.host_port_range, f"holds fewer ports than pool.max_size ({pool.max_size})"
            )
        if rules.residue_processes < 0:
            raise ConfigError("rules.residue_processes", rules.residue_processes, "must be >= 0")
        for key in ("max_memory_mb", "error_threshold", "health_failures"):
            if getattr(rules, key) < 1:
                raise ConfigError(f"rules.{key}", getattr(rules, key), "must be >= 1")
        for key in ("health_interval_s", "health_timeout_s", "lease_ttl_s", "max_lease_s", "tick_s", "idle_shrink_s", "leader_retry_s"):
            if getattr(rules, key) <= 0:
                raise ConfigError(f"rules.{key}", getattr(rules, key), "must be > 0")
        if not 0.0 <= rules.canary_share <= 1.0:
            raise ConfigError("rules.canary_share", rules.canary_share, "must be between 0 and 1")
        for key in ("cleanup_timeout_s", "canary_timeout_s"):
            if getattr(rules, key) <= 0:
                raise ConfigError(f"rules.{key}", getattr(rules, key), "must be > 0")
        if rules.scale_cooldown_s < 0:
            raise ConfigError("rules.scale_cooldown_s", rules.scale_cooldown_s, "must be >= 0")
        if not rules.leader_retry_s < rules.leader_renew_deadline_s < rules.leader_lease_s:
            raise ConfigError(
                "rules.leader_renew_deadline_s",
                rules.leader_renew_deadline_s,
                f"must be between rules.leader_retry_s ({rules.leader_retry_s}) and rules.leader_lease_s ({rules.leader_lease_s})",
            )
        self._validate_gateway()
        self.dashboard.validate()
        if self.logs.artifacts_max_mb < 1:
            raise ConfigError("logs.artifacts_max_mb", self.logs.artifacts_max_mb, "must be >= 1")
        if rules.max_lease_s < rules.lease_ttl_s:
            raise ConfigError("rules.max_lease_s", rules.max_lease_s, f"must be >= rules.lease_ttl_s ({rules.lease_ttl_s})")
        for entry in self.worker.allowed_functions:
            if not _MODULE_PATH.fullmatch(entry):
                raise ConfigError("worker.allowed_functions", entry, 'must be a module path such as "workers" or "app.jobs."')

    def _validate_gateway(self) -> None:
        gateway = self.gateway
        if gateway.listen:
            match = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})", gateway.listen)
            if match is None or not 1 <= int(match.group(2)) <= 65535:
                raise ConfigError("gateway.listen", gateway.listen, 'must be "host:port" (e.g. "127.0.0.1:8930"), or "" for no gateway')
        if gateway.advertise_url:
            if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~%/-]*)?", gateway.advertise_url):
                raise ConfigError(
                    "gateway.advertise_url", gateway.advertise_url, "must be an http:// or https:// URL without user:password@"
                )
            if not gateway.listen:
                raise ConfigError("gateway.advertise_url", gateway.advertise_url, 'needs gateway.listen (it is "")')
        for url in gateway.trusted_urls:
            if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~%/-]*)?", url):
                raise ConfigError("gateway.trusted_urls", url, "must be an http:// or https:// URL without user:password@")
        if bool(gateway.tls_cert) != bool(gateway.tls_key):
            raise ConfigError(
                "gateway.tls_cert" if not gateway.tls_cert else "gateway.tls_key", "", "set both tls_cert and tls_key, or neither"
            )
        if gateway.max_body_bytes < 1024:
            raise ConfigError("gateway.max_body_bytes", gateway.max_body_bytes, "must be >= 1024")
        for key in ("max_connections", "max_connections_per_client", "max_streams_per_lease"):
            if getattr(gateway, key) < 1:
                raise ConfigError(f"gateway.{key}", getattr(gateway, key), "must be >= 1")
        for key in (
            "body_timeout_s",
            "header_timeout_s",
            "connect_timeout_s",
            "upstream_timeout_s",
            "prepare_timeout_s",
            "prepare_refresh_s",
        ):
            if getattr(gateway, key) <= 0:
                raise ConfigError(f"gateway.{key}", getattr(gateway, key), "must be > 0")


_SECTION_TYPES: dict[str, type] = {
    "redis": RedisSettings,
    "pool": PoolSettings,
    "container": ContainerTemplate,
    "rules": Rules,
    "logs": LogSettings,
    "metrics": MetricsSettings,
    "gateway": GatewaySettings,
    "worker": WorkerSettings,
    "dashboard": DashboardSettings,
}

ENV_VARIABLES: dict[str, str] = {
    "CINNAMON_REDIS_URL": "redis.url",
    "CINNAMON_POOL": "pool.name",
    "CINNAMON_IMAGE": "container.image",
    "CINNAMON_MIN_SIZE": "pool.min_size",
    "CINNAMON_MAX_SIZE": "pool.max_size",
    "CINNAMON_INITIAL_SIZE": "pool.initial_size",
    "CINNAMON_LOG_DIR": "logs.dir",
    "CINNAMON_MAX_MEMORY_MB": "rules.max_memory_mb",
    "CINNAMON_ERROR_THRESHOLD": "rules.error_threshold",
    "CINNAMON_METRICS_PORT": "metrics.port",
}

_MODULE_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\.?")
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_memory(text: str, key: str) -> int:
    """``"512m"`` -> bytes, in Docker's units; anything else is a ConfigError naming ``key``."""
    match = re.fullmatch(r"\s*(\d+)\s*([bkmg]?)\s*", str(text).lower())
    if not match or int(match.group(1)) == 0:
        raise ConfigError(key, text, 'must be a size like "512m" or "2g" (units b, k, m, g)')
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2)]


def _check_port_range(text: str) -> None:
    match = re.fullmatch(r"(\d+)-(\d+)", text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)) <= 65535:
        raise ConfigError("container.host_port_range", text, 'must be "LOW-HIGH" with 1 <= LOW <= HIGH <= 65535')


def _read_toml(path: Path, source: str) -> dict[str, Any]:
    """The file named by ``source`` (``--config`` or ``CINNAMON_CONFIG``), as the error says."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as error:
        raise ConfigError(source, str(path), "file not found") from error
    except IsADirectoryError as error:
        raise ConfigError(source, str(path), "is a directory, not a TOML file") from error
    except PermissionError as error:
        raise ConfigError(source, str(path), "cannot be read (permission denied)") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(source, str(path), f"not valid TOML: {error}") from error


def redact(url: str) -> str:
    """``url`` with the password of its user:password@ part replaced by ``***``, for messages."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:@/]*):[^@/]*@", r"\1:***@", url)


_KIND_NAMES = {bool: "true or false", int: "a whole number", float: "a number"}


def _from_env(variable: str, text: str, section: str, key: str) -> Any:
    """Environment values are strings; convert them to the field's type, naming the variable."""
    default = getattr(_SECTION_TYPES[section](), key)
    try:
        if isinstance(default, bool):
            return {"true": True, "1": True, "false": False, "0": False}[text.lower()]
        if isinstance(default, (int, float)):
            return type(default)(text)
    except (KeyError, ValueError) as error:
        raise ConfigError(variable, text, f"must be {_KIND_NAMES[type(default)]}") from error
    return text


def _build_section(section: str, section_type: type, raw: Mapping[str, Any]) -> Any:
    known = {f.name: f for f in dataclasses.fields(section_type)}
    defaults = section_type()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{section}.{key}"
        if key not in known:
            raise ConfigError(dotted, value, f"unknown key (known in [{section}]: {', '.join(known)})")
        values[key] = _coerce(dotted, value, getattr(defaults, key))
    return section_type(**values)


def _coerce(dotted: str, value: Any, default: Any) -> Any:
    """Check a TOML value against the type of the field's default."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(dotted, value, "must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(dotted, value, "must be a whole number")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(dotted, value, "must be a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(dotted, value, "must be a string")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(dotted, value, "must be a list of strings")
        return tuple(value)
    if isinstance(default, Mapping):
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(dotted, value, "must be a table of strings")
        return dict(value)
    raise ConfigError(dotted, value, "has no known type")  # pragma: no cover - every field is covered above
