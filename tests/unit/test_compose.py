"""The compose files: valid YAML, the services a team needs, and the security lines kept."""

from __future__ import annotations

from pathlib import Path

import yaml  # type: ignore[import-untyped]  # PyYAML ships no types

from cinnamon_pool.config import PoolConfig

COMPOSE = Path(__file__).resolve().parents[2] / "compose"


def load(name: str) -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((COMPOSE / name).read_text())  # type: ignore[no-any-return]


def test_the_stack_has_redis_with_aof_a_supervisor_a_gateway_a_dashboard_and_workers() -> None:
    services = load("docker-compose.yml")["services"]
    assert set(services) == {"redis", "supervisor", "gateway", "dashboard", "worker"}
    config = PoolConfig.load(COMPOSE / "pool.compose.toml", {})
    assert config.dashboard.listen != config.gateway.listen and config.dashboard.loopback, "the dashboard on loopback, beside the gateway"
    assert any(volume.endswith(":/trace-viewer:ro") for volume in services["dashboard"]["volumes"]) and config.dashboard.trace_viewer
    redis_command = services["redis"]["command"]
    assert "--appendonly" in redis_command and redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert redis_command[redis_command.index("--maxmemory-policy") + 1] == "noeviction"
    assert all(service["image"].startswith("cinnamon-pool/") for service in services.values()), "local images only"


def test_only_the_supervisor_gets_the_docker_socket() -> None:
    services = load("docker-compose.yml")["services"]
    with_socket = sorted(name for name, s in services.items() if any("docker.sock" in v for v in s.get("volumes", [])))
    assert with_socket == ["supervisor"]
    assert services["worker"]["user"] != "0:0"


def test_the_stack_configuration_is_valid_and_matches_the_compose_file() -> None:
    config = PoolConfig.load(COMPOSE / "pool.compose.toml", {})
    services = load("docker-compose.yml")["services"]
    assert "--port" in services["redis"]["command"] and config.redis.url.endswith(":6390/0")
    assert config.redis.url in services["worker"]["command"]
    assert config.logs.dir == "/logs"


def test_the_dev_override_only_overrides_known_services() -> None:
    assert set(load("docker-compose.dev.yml")["services"]) <= set(load("docker-compose.yml")["services"])
