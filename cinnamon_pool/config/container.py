"""The [container] table: what each pool container runs (image, command, limits, network,
recording), and how the pool completes its command. Validated by itself."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cinnamon_pool.errors import ConfigError
from cinnamon_pool.model import local_slot

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

    def validate(self) -> None:
        parse_memory(self.memory, "container.memory")
        if self.image_id and not re.fullmatch(r"sha256:[0-9a-f]{64}", self.image_id):
            raise ConfigError("container.image_id", self.image_id, 'must be "sha256:" and 64 hex digits (docker image inspect -f {{.Id}})')
        if "@" in self.image and not re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", self.image):
            raise ConfigError("container.image", self.image, "a digest pin must look like name@sha256:<64 hex digits>")
        _check_port_range(self.host_port_range)
        if not 1 <= self.port <= 65535:
            raise ConfigError("container.port", self.port, "must be a TCP port (1-65535)")
        if self.cpus <= 0:
            raise ConfigError("container.cpus", self.cpus, "must be > 0")
        if self.idle_timeout_s < 0:
            raise ConfigError("container.idle_timeout_s", self.idle_timeout_s, "must be >= 0 (0 = the browser never closes for idleness)")
        if self.egress not in {"restricted", "open"}:
            raise ConfigError("container.egress", self.egress, 'must be "restricted" or "open"')
        for cidr in self.egress_allow:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError("container.egress_allow", cidr, 'must be an IPv4 address or CIDR ("10.1.2.0/24")') from None
            if ":" in cidr:
                raise ConfigError("container.egress_allow", cidr, "must be IPv4 (the pool network is IPv4)")
        for volume in self.volumes:
            if not re.fullmatch(r"[^:]+:/[^:]*(:(ro|rw))?", volume):
                raise ConfigError("container.volumes", volume, 'must be "host:container[:ro|rw]"')


def _add_capability(command: list[str], capability: str) -> None:
    """``--caps a,b`` gains ``capability`` (or is added)."""
    if "--caps" in command:
        at = command.index("--caps") + 1
        if at < len(command) and capability not in command[at].split(","):
            command[at] = f"{command[at]},{capability}"
    else:
        command += ["--caps", capability]


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
