from pathlib import Path

import pytest

from cinnamon_pool.config import DEFAULT_COMMAND, OUTPUT_DIR, PoolConfig, WorkerSettings
from cinnamon_pool.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pool.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_design_contract() -> None:
    config = PoolConfig.load(None, {})
    assert config.redis.url == "redis://127.0.0.1:6379/0"
    assert (config.pool.name, config.pool.min_size, config.pool.max_size, config.pool.initial_size) == ("default", 2, 10, 2)
    assert config.container.image == "mcr.microsoft.com/playwright/mcp:latest"
    assert config.container.command == DEFAULT_COMMAND
    assert config.container.memory_bytes == 512 * 1024**2
    assert config.container.host_ports == range(3000, 4000)
    assert (config.rules.max_memory_mb, config.rules.error_threshold, config.rules.lease_ttl_s) == (400, 3, 30.0)


def test_file_then_environment_and_the_environment_wins(tmp_path: Path) -> None:
    path = write(tmp_path, '[pool]\nname = "qa"\nmax_size = 6\n[container]\nimage = "from-file"\nenv = {A = "1"}\n')
    config = PoolConfig.load(None, {"CINNAMON_CONFIG": str(path), "CINNAMON_IMAGE": "from-env", "CINNAMON_MAX_SIZE": "8"})
    assert config.pool.name == "qa"
    assert config.container.image == "from-env"
    assert config.pool.max_size == 8
    assert dict(config.container.env) == {"A": "1"}


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("[pool]\nmax_sise = 3\n", "pool.max_sise", 3),
        ("[pool]\nmin_size = 5\nmax_size = 3\ninitial_size = 3\n", "pool.min_size", 5),
        ('[container]\nmemory = "lots"\n', "container.memory", "lots"),
        ('[container]\nhost_port_range = "4000-3000"\n', "container.host_port_range", "4000-3000"),
        ('[pool]\nmax_size = 4\n[container]\nhost_port_range = "4000-4002"\n', "container.host_port_range", "4000-4002"),
        ('[container]\nvolumes = ["relative"]\n', "container.volumes", "relative"),
        ("[rules]\nerror_threshold = 0\n", "rules.error_threshold", 0),
        ('[rules]\nlease_ttl_s = "30"\n', "rules.lease_ttl_s", "30"),
        ("[nonsense]\nx = 1\n", "nonsense", {"x": 1}),
        ('[worker]\nallowed_functions = ["workers", "os; rm"]\n', "worker.allowed_functions", "os; rm"),
        ('[pool]\nname = "a:b{c}"\n', None, "a:b{c}"),
    ],
)
def test_bad_configuration_names_the_key_and_the_value(tmp_path: Path, text: str, key: str | None, value: object) -> None:
    with pytest.raises((ConfigError, ValueError)) as caught:
        PoolConfig.load(write(tmp_path, text), {})
    message = str(caught.value)
    assert repr(value) in message, f"the message should show the bad value {value!r}: {message}"
    if key is not None:
        assert isinstance(caught.value, ConfigError) and caught.value.key == key, message


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="CINNAMON_MIN_SIZE='two'"):
        PoolConfig.load(None, {"CINNAMON_MIN_SIZE": "two"})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        PoolConfig.load(tmp_path / "nope.toml", {})


def test_the_shipped_local_config_is_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    config = PoolConfig.load(root / "compose" / "pool.local.toml", {})
    assert config.container.image == "cinnamon-pool/playwright-mcp:local"
    assert "/usr:/usr:ro" in config.container.volumes


@pytest.mark.parametrize(
    ("tables", "key", "value"),
    [
        ({"sentinels": ["127.0.0.1"], "service": "s"}, "redis.sentinels", "127.0.0.1"),
        ({"sentinels": ["127.0.0.1:99999"], "service": "s"}, "redis.sentinels", "127.0.0.1:99999"),
        ({"sentinels": ["127.0.0.1:26379"]}, "redis.service", ""),
        ({"wait_replicas": -2}, "redis.wait_replicas", -2),
        ({"wait_timeout_ms": 0}, "redis.wait_timeout_ms", 0),
        ({"url": "http://127.0.0.1:6379"}, "redis.url", "http://127.0.0.1:6379"),
        ({"url": "redis+cluster://127.0.0.1:7000/3"}, "redis.url", "redis+cluster://127.0.0.1:7000/3"),
        ({"url": "redis://:pw@127.0.0.1:7000/1", "cluster": True}, "redis.url", "redis://:***@127.0.0.1:7000/1"),
        ({"cluster": True, "sentinels": ["127.0.0.1:26379"], "service": "s"}, "redis.sentinels", "127.0.0.1:26379"),
    ],
)
def test_bad_sentinel_settings_name_the_key_and_the_value(tables: dict[str, object], key: str, value: object) -> None:
    with pytest.raises(ConfigError) as error:
        PoolConfig.from_tables({"redis": tables})
    assert (error.value.key, error.value.value) == (key, value)


def test_grants_wait_for_one_replica_with_sentinels_and_for_none_without_unless_told() -> None:
    assert PoolConfig.from_tables({}).redis.replicas_to_wait == 0
    ha = {"sentinels": ["10.0.0.1:26379", "10.0.0.2:26379"], "service": "cinnamon"}
    assert PoolConfig.from_tables({"redis": ha}).redis.replicas_to_wait == 1
    assert PoolConfig.from_tables({"redis": {**ha, "wait_replicas": 0}}).redis.replicas_to_wait == 0
    assert PoolConfig.from_tables({"redis": ha}).redis.sentinel_addresses == [("10.0.0.1", 26379), ("10.0.0.2", 26379)]


def test_a_cluster_is_named_by_its_url_scheme_or_by_cluster_true_and_waits_for_one_replica() -> None:
    by_scheme = PoolConfig.from_tables({"redis": {"url": "rediss+cluster://u:p@10.0.0.5:6379"}}).redis
    assert by_scheme.is_cluster and by_scheme.node_url == "rediss://u:p@10.0.0.5:6379"
    assert by_scheme.replicas_to_wait == 1
    by_key = PoolConfig.from_tables({"redis": {"url": "redis://10.0.0.5:6379/0", "cluster": True, "wait_replicas": 0}}).redis
    assert by_key.is_cluster and by_key.node_url == "redis://10.0.0.5:6379/0" and by_key.replicas_to_wait == 0
    assert not PoolConfig.from_tables({}).redis.is_cluster


def test_the_pool_turns_webmcp_off_and_passes_the_idle_timeout_unless_told_otherwise() -> None:
    default = PoolConfig.from_tables({}).container
    command = default.command_for(3001)
    assert command[-9:-4] == ("--allowed-hosts", "127.0.0.1:3001", "--no-webmcp", "--idle-timeout", "3600000")
    assert default.browser_idle_s == 3600
    chosen = PoolConfig.from_tables({"container": {"webmcp": True, "idle_timeout_s": 20}}).container
    assert "--no-webmcp" not in chosen.command_for(3001) and chosen.command_for(3001)[-6:-4] == ("--idle-timeout", "20000")
    assert chosen.browser_idle_s == 20
    own = PoolConfig.from_tables({"container": {"command": ["--headless", "--idle-timeout=90000"]}}).container
    assert own.command_for(3001).count("--idle-timeout=90000") == 1 and own.browser_idle_s == 90, "the command's own value wins"
    never = PoolConfig.from_tables({"container": {"idle_timeout_s": 0}}).container
    assert never.browser_idle_s is None, "0: the browser never closes for idleness"
    image = PoolConfig.from_tables({"container": {"command": []}}).container
    assert image.command_for(3001) == () and image.browser_idle_s == 3600, "the image's own command: playwright-mcp's default"


def test_the_pool_records_a_trace_per_lease_with_the_devtools_tools_and_an_output_folder() -> None:
    default = PoolConfig.from_tables({}).container
    assert default.command_for(3001)[-4:] == ("--caps", "devtools", "--output-dir", OUTPUT_DIR) and default.records
    joined = PoolConfig.from_tables({"container": {"command": ["--headless", "--caps", "vision"]}}).container
    assert joined.command_for(3001)[:3] == ("--headless", "--caps", "vision,devtools"), "the command's own caps gain devtools"
    off = PoolConfig.from_tables({"container": {"artifacts_trace": False}}).container
    assert "--caps" not in off.command_for(3001) and "--output-dir" not in off.command_for(3001) and not off.records
    video = PoolConfig.from_tables({"container": {"artifacts_trace": False, "artifacts_video": True}}).container
    assert video.records and "devtools" in video.command_for(3001)
    assert not PoolConfig.from_tables({"container": {"command": []}}).container.records, "the image's own command: the pool adds nothing"
    with pytest.raises(ConfigError, match=r"logs\.artifacts_max_mb.*0"):
        PoolConfig.from_tables({"logs": {"artifacts_max_mb": 0}})
    with pytest.raises(ConfigError, match=r"dashboard\.listen.*'8940'"):
        PoolConfig.from_tables({"dashboard": {"listen": "8940"}})


def test_chromium_keeps_its_sandbox_unless_the_configuration_turns_it_off() -> None:
    default = PoolConfig.from_tables({}).container
    assert "--sandbox" in default.command_for(3001) and "--no-sandbox" not in default.command_for(3001)
    assert default.sandboxed and default.sandbox_state.startswith("on")
    off = PoolConfig.from_tables({"container": {"chromium_sandbox": False}}).container
    assert "--no-sandbox" in off.command_for(3001) and not off.sandboxed
    assert off.sandbox_state == "off (container.chromium_sandbox = false: --no-sandbox)"
    told = PoolConfig.from_tables({"container": {"command": ["--headless", "--no-sandbox", "--port", "8931"]}}).container
    assert told.command_for(3001).count("--no-sandbox") == 1 and "--sandbox" not in told.command_for(3001), "the command's own word wins"
    assert told.sandbox_state == "off (container.command has --no-sandbox)"
    image = PoolConfig.from_tables({"container": {"command": []}}).container
    assert not image.sandboxed and "image's own command" in image.sandbox_state


def test_allowed_functions_are_modules_and_their_submodules_never_a_name_that_begins_alike() -> None:
    guard = WorkerSettings(allowed_functions=("workers", "app.jobs."))
    assert [guard.allows(n) for n in ("workers.jobs.sign_in", "app.jobs.run", "workers_evil.run", "os.system")] == [
        True,
        True,
        False,
        False,
    ]
    assert WorkerSettings().allows("os.system"), "no list: rq's own behaviour (the worker warns at start)"


def test_egress_is_restricted_by_default_and_its_allow_list_is_checked_and_bypasses_the_dead_proxy() -> None:
    default = PoolConfig.from_tables({}).container
    assert default.egress == "restricted" and "--proxy-bypass" not in default.command_for(3001)
    allowed = PoolConfig.from_tables({"container": {"egress_allow": ["10.1.2.0/24", "172.17.0.1"]}}).container
    command = allowed.command_for(3001)
    assert command[command.index("--proxy-bypass") + 1] == "localhost,127.0.0.1,10.1.2.0/24,172.17.0.1"
    for bad, says in (
        ({"egress": "closed"}, 'must be "restricted" or "open"'),
        ({"egress_allow": ["10.1.2.0/33"]}, "IPv4 address or CIDR"),
    ):
        with pytest.raises(ConfigError, match=says) as raised:
            PoolConfig.from_tables({"container": bad})
        assert raised.value.key == f"container.{next(iter(bad))}"
