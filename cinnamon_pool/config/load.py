"""Pool configuration: a frozen dataclass per TOML table, validated loudly.

Built by entry points from a TOML file (``--config PATH`` or ``CINNAMON_CONFIG``) and the
``CINNAMON_*`` variables, the environment winning over the file. Unknown keys and bad values
raise :class:`ConfigError` naming the key (``pool.min_size``) or variable and the value.
No module reads the environment on its own: callers pass ``environ``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cinnamon_pool.config.container import ContainerTemplate
from cinnamon_pool.config.sections import (
    DashboardSettings,
    GatewaySettings,
    LogSettings,
    MetricsSettings,
    PoolSettings,
    RedisSettings,
    Rules,
    WorkerSettings,
)
from cinnamon_pool.errors import ConfigError


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
    def from_environment(cls) -> PoolConfig:
        """The configuration of this process's environment (``CINNAMON_CONFIG`` and the
        ``CINNAMON_*`` variables), for the job side (rq workers and their work horses): parsed
        again only when the file or a variable changed."""
        variables = tuple((k, os.environ[k]) for k in _CONFIG_VARIABLES if k in os.environ)
        path = os.environ.get("CINNAMON_CONFIG")
        try:
            stamp = os.stat(path).st_mtime_ns if path else 0
        except OSError:
            stamp = -1  # let load() report the missing file
        return _parsed(variables, stamp)

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
        """Each table checks its own values; then the rules that span tables."""
        for section_field in dataclasses.fields(self):
            getattr(self, section_field.name).validate()
        if len(self.container.host_ports) < self.pool.max_size:
            raise ConfigError(
                "container.host_port_range",
                self.container.host_port_range,
                f"holds fewer ports than pool.max_size ({self.pool.max_size})",
            )


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


_CONFIG_VARIABLES = ("CINNAMON_CONFIG", *ENV_VARIABLES)


@functools.lru_cache(maxsize=8)
def _parsed(variables: tuple[tuple[str, str], ...], stamp: int) -> PoolConfig:
    return PoolConfig.load(environ=dict(variables))
