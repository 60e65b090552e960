"""The other tables: [redis], [pool], [rules], [logs], [gateway], [worker], [metrics] and
[dashboard], a frozen dataclass each, each checking its own values (``validate``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cinnamon_pool.errors import ConfigError, InvalidIdentifier
from cinnamon_pool.model import SLOTS_PER_HOST, validate_host, validate_pool_name

_MODULE_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\.?")
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
_URL = r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~%/-]*)?"


@dataclass(frozen=True)
class RedisSettings:
    """Where the lease store lives. With ``sentinels``, the primary of ``service`` as Redis
    Sentinel reports it (followed across failovers); ``url`` then gives only the database number
    and the credentials. With ``cluster`` (or a ``redis+cluster://`` URL), a Redis Cluster that
    ``url`` names one node of: the pool's keys share one hash slot, and the store talks to the
    primary serving it (followed across failovers). ``wait_replicas``: how many replicas must
    acknowledge a grant before it is returned (Redis WAIT); -1 means 1 with sentinels or a
    cluster, and 0 without."""

    url: str = "redis://127.0.0.1:6379/0"
    sentinels: tuple[str, ...] = ()  # "host:port" of each Sentinel
    service: str = ""  # the primary's name in Sentinel (its `sentinel monitor <name> ...` line)
    cluster: bool = False
    wait_replicas: int = -1
    wait_timeout_ms: int = 500

    @property
    def is_cluster(self) -> bool:
        return self.cluster or self.url.startswith(CLUSTER_SCHEMES)

    @property
    def node_url(self) -> str:
        """``url`` with the scheme redis-py reads (``redis+cluster://`` -> ``redis://``)."""
        scheme, sep, rest = self.url.partition("://")
        return f"{scheme.removesuffix('+cluster')}{sep}{rest}"

    @property
    def replicas_to_wait(self) -> int:
        if self.wait_replicas >= 0:
            return self.wait_replicas
        return 1 if self.sentinels or self.is_cluster else 0

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(host, int(port)) for host, _, port in (entry.rpartition(":") for entry in self.sentinels)]

    def validate(self) -> None:
        if not re.fullmatch(r"(redis|rediss|unix|redis\+cluster|rediss\+cluster)://.+", self.url):
            raise ConfigError(
                "redis.url", redact(self.url), "must start with redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://"
            )
        if self.is_cluster and self.sentinels:
            raise ConfigError("redis.sentinels", ", ".join(self.sentinels), "a Redis Cluster fails over by itself: use one or the other")
        if self.is_cluster and not re.fullmatch(r"rediss?(\+cluster)?://[^/]+(/0?)?", self.url):
            raise ConfigError("redis.url", redact(self.url), "a Redis Cluster node (redis://host:port): a cluster has only database 0")
        for entry in self.sentinels:
            if not re.fullmatch(r"[^\s:]+:\d{1,5}", entry) or not 0 < int(entry.rpartition(":")[2]) <= 65535:
                raise ConfigError("redis.sentinels", entry, 'each must be "host:port" of a Sentinel')
        if self.sentinels and not self.service:
            raise ConfigError("redis.service", self.service, "must name the primary Sentinel monitors when redis.sentinels is set")
        if self.wait_replicas < -1:
            raise ConfigError("redis.wait_replicas", self.wait_replicas, "must be >= 0 (or -1: 1 with sentinels, 0 without)")
        if self.wait_timeout_ms <= 0:
            raise ConfigError("redis.wait_timeout_ms", self.wait_timeout_ms, "must be > 0")


@dataclass(frozen=True)
class PoolSettings:
    name: str = "default"
    min_size: int = 2
    max_size: int = 10
    initial_size: int = 2
    host: str = ""  # this Docker host's name in the pool; "" = the name Docker reports (docker info)

    def validate(self) -> None:
        validate_pool_name(self.name)
        if self.host:
            try:
                validate_host(self.host)
            except InvalidIdentifier as error:
                raise ConfigError("pool.host", self.host, error.reason) from None
        if self.min_size < 0:
            raise ConfigError("pool.min_size", self.min_size, "must be >= 0")
        if not 1 <= self.max_size < SLOTS_PER_HOST:
            raise ConfigError("pool.max_size", self.max_size, f"must be 1..{SLOTS_PER_HOST - 1} (per Docker host)")
        if self.min_size > self.max_size:
            raise ConfigError("pool.min_size", self.min_size, f"must be <= pool.max_size ({self.max_size})")
        if not self.min_size <= self.initial_size <= self.max_size:
            raise ConfigError(
                "pool.initial_size", self.initial_size, f"must be within pool.min_size..pool.max_size ({self.min_size}..{self.max_size})"
            )


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

    def validate(self) -> None:
        if self.residue_processes < 0:
            raise ConfigError("rules.residue_processes", self.residue_processes, "must be >= 0")
        for key in ("max_memory_mb", "error_threshold", "health_failures"):
            if getattr(self, key) < 1:
                raise ConfigError(f"rules.{key}", getattr(self, key), "must be >= 1")
        positive = ("health_interval_s", "health_timeout_s", "lease_ttl_s", "max_lease_s", "tick_s", "idle_shrink_s", "leader_retry_s")
        for key in (*positive, "cleanup_timeout_s", "canary_timeout_s"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"rules.{key}", getattr(self, key), "must be > 0")
        if not 0.0 <= self.canary_share <= 1.0:
            raise ConfigError("rules.canary_share", self.canary_share, "must be between 0 and 1")
        if self.scale_cooldown_s < 0:
            raise ConfigError("rules.scale_cooldown_s", self.scale_cooldown_s, "must be >= 0")
        if not self.leader_retry_s < self.leader_renew_deadline_s < self.leader_lease_s:
            raise ConfigError(
                "rules.leader_renew_deadline_s",
                self.leader_renew_deadline_s,
                f"must be between rules.leader_retry_s ({self.leader_retry_s}) and rules.leader_lease_s ({self.leader_lease_s})",
            )
        if self.max_lease_s < self.lease_ttl_s:
            raise ConfigError("rules.max_lease_s", self.max_lease_s, f"must be >= rules.lease_ttl_s ({self.lease_ttl_s})")


@dataclass(frozen=True)
class LogSettings:
    dir: str = "logs"
    # a trace over this many MB is not kept, and a day's artifacts folder is cut back to it,
    # oldest runs' traces first
    artifacts_max_mb: int = 1024

    def validate(self) -> None:
        if self.artifacts_max_mb < 1:
            raise ConfigError("logs.artifacts_max_mb", self.artifacts_max_mb, "must be >= 1")


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

    def validate(self) -> None:
        gateway = self
        if gateway.listen:
            match = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})", gateway.listen)
            if match is None or not 1 <= int(match.group(2)) <= 65535:
                raise ConfigError("gateway.listen", gateway.listen, 'must be "host:port" (e.g. "127.0.0.1:8930"), or "" for no gateway')
        if gateway.advertise_url:
            if not re.fullmatch(_URL, gateway.advertise_url):
                raise ConfigError(
                    "gateway.advertise_url", gateway.advertise_url, "must be an http:// or https:// URL without user:password@"
                )
            if not gateway.listen:
                raise ConfigError("gateway.advertise_url", gateway.advertise_url, 'needs gateway.listen (it is "")')
        for url in gateway.trusted_urls:
            if not re.fullmatch(_URL, url):
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


@dataclass(frozen=True)
class WorkerSettings:
    """``rq worker -w cinnamon_pool.worker.Worker``: what a job read from Redis may make it run."""

    allowed_functions: tuple[str, ...] = ()  # modules ("workers", "app.jobs"): theirs and their submodules' functions; () = any
    allow_pickle: bool = False  # rq's default serializer: whoever writes to Redis would run code in the workers

    def allows(self, func_name: str) -> bool:
        """Whether the job function ``func_name`` ("module.function") may run."""
        modules = (entry.rstrip(".") for entry in self.allowed_functions)
        return not self.allowed_functions or any(func_name == m or func_name.startswith(m + ".") for m in modules)

    def validate(self) -> None:
        for entry in self.allowed_functions:
            if not _MODULE_PATH.fullmatch(entry):
                raise ConfigError("worker.allowed_functions", entry, 'must be a module path such as "workers" or "app.jobs."')


@dataclass(frozen=True)
class MetricsSettings:
    host: str = "127.0.0.1"
    port: int = 9464  # 0 turns the endpoint off

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError("metrics.port", self.port, "must be a TCP port, or 0 for no metrics endpoint")


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


def redact(url: str) -> str:
    """``url`` with the password of its user:password@ part replaced by ``***``, for messages."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:@/]*):[^@/]*@", r"\1:***@", url)
