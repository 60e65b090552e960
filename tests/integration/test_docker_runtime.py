"""The Docker adapter against the real engine, with the fake-mcp image."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import docker
import httpx
import pytest

from cinnamon_pool.errors import ImageMissing
from cinnamon_pool.health import liveness, readiness
from cinnamon_pool.runtime.base import ContainerSpec, pool_labels
from cinnamon_pool.runtime.docker import DockerRuntime
from tests.conftest import test_config

pytestmark = pytest.mark.docker


def wait_ready(endpoint: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if readiness(endpoint, 2).ok:
            return
        time.sleep(0.05)
    pytest.fail(f"{endpoint} was not ready within {seconds} s")


@pytest.fixture
def runtime(docker_client: docker.DockerClient) -> DockerRuntime:
    return DockerRuntime(docker_client)


def spec_for(pool: str, network: str, redis_url: str, image: str, slot: int = 1) -> ContainerSpec:
    config = test_config(pool, redis_url, image=image, network=network)
    return ContainerSpec(
        pool,
        slot,
        f"cinnamon-{pool}-container-{slot:03d}",
        config.container.host_ports[slot - 1],
        config.container,
        pool_labels(pool, slot, "test-host"),
        config.container.command_for(config.container.host_ports[slot - 1]),
    )


def test_create_applies_the_hardened_template(
    runtime: DockerRuntime, docker_client: docker.DockerClient, pool_cleanup: str, test_network: str, fake_image: str
) -> None:
    spec = spec_for(pool_cleanup, test_network, "redis://127.0.0.1:1/0", fake_image)
    observed = runtime.create(spec)
    host = docker_client.api.inspect_container(observed.container_id)["HostConfig"]
    assert host["Init"] is True
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Memory"] == 512 * 1024**2 and host["MemorySwap"] == host["Memory"], "swap must equal memory"
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 512
    assert host["RestartPolicy"]["Name"] in {"no", ""}
    assert host["PortBindings"]["8931/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(spec.host_port)}]
    assert "/tmp" in host["Tmpfs"]
    listed = runtime.list(pool_cleanup)
    assert [c.container_id for c in listed] == [observed.container_id]
    assert listed[0].belongs_to(pool_cleanup, "test-host") and listed[0].host_port == spec.host_port
    wait_ready(f"http://127.0.0.1:{spec.host_port}/mcp")


def test_probes_and_memory_reading_follow_the_container(
    runtime: DockerRuntime, pool_cleanup: str, test_network: str, fake_image: str
) -> None:
    spec = spec_for(pool_cleanup, test_network, "redis://127.0.0.1:1/0", fake_image)
    observed = runtime.create(spec)
    endpoint = f"http://127.0.0.1:{spec.host_port}/mcp"
    wait_ready(endpoint)
    assert liveness(endpoint).detail == "HTTP 400", "GET /mcp answers 400 like playwright-mcp"
    before = runtime.memory_mb(observed.container_id)
    assert before is not None and 1 < before < 100, before
    httpx.post(f"http://127.0.0.1:{spec.host_port}/_fake/mode", json={"grow_mb": 60}, timeout=10).raise_for_status()
    after = runtime.memory_mb(observed.container_id)
    assert after is not None and after - before >= 55, f"memory went from {before} to {after} MB after growing 60 MB"
    cpu_before = runtime.cpu_seconds(observed.container_id)
    for _ in range(200):  # work for the container: it parses, answers, records
        httpx.get(f"http://127.0.0.1:{spec.host_port}/mcp", timeout=5)
    cpu_after = runtime.cpu_seconds(observed.container_id)
    assert cpu_before is not None and cpu_after is not None and cpu_after > cpu_before, (cpu_before, cpu_after)
    runtime.remove(observed.container_id)
    assert runtime.list(pool_cleanup) == []
    assert not readiness(endpoint, 1).ok


def test_process_count_sees_a_session_browser_not_request_threads(
    runtime: DockerRuntime, pool_cleanup: str, test_network: str, fake_image: str, tmp_path: Path
) -> None:
    spec = spec_for(pool_cleanup, test_network, "redis://127.0.0.1:1/0", fake_image)
    observed = runtime.create(spec)
    endpoint = f"http://127.0.0.1:{spec.host_port}/mcp"
    wait_ready(endpoint)
    # Without visible cgroup files the adapter asks the engine (docker top); both must agree.
    blind = DockerRuntime(runtime.client, cgroup_root=tmp_path)
    idle = runtime.process_count(observed.container_id)
    assert idle is not None and idle == blind.process_count(observed.container_id), (idle, blind.process_count(observed.container_id))
    with concurrent.futures.ThreadPoolExecutor(8) as probes:  # request threads in the server are not processes
        list(probes.map(lambda _: readiness(endpoint, 5), range(16)))
    assert runtime.process_count(observed.container_id) == idle
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"clientInfo": {"name": "job", "version": "1"}}}
    opened = httpx.post(endpoint, json=initialize, headers={"Accept": "application/json, text/event-stream"}, timeout=10)
    assert runtime.process_count(observed.container_id) == idle + 1 == blind.process_count(observed.container_id)
    httpx.delete(endpoint, headers={"mcp-session-id": opened.headers["mcp-session-id"]}, timeout=10).raise_for_status()
    assert runtime.process_count(observed.container_id) == idle


def test_a_missing_image_leaves_nothing_behind(runtime: DockerRuntime, pool_cleanup: str, test_network: str) -> None:
    spec = spec_for(pool_cleanup, test_network, "redis://127.0.0.1:1/0", "cinnamon-pool/does-not-exist:1")
    with pytest.raises(ImageMissing, match="does-not-exist"):
        runtime.create(spec)
    assert runtime.list(pool_cleanup) == []


def test_pool_containers_cannot_reach_each_other_and_refuse_other_host_headers(
    runtime: DockerRuntime, docker_client: docker.DockerClient, pool_cleanup: str, fake_image: str
) -> None:
    network = f"{pool_cleanup}-net"
    runtime.ensure_network(network)  # as the supervisor creates the pool's network
    try:
        assert docker_client.api.inspect_network(network)["Options"]["com.docker.network.bridge.enable_icc"] == "false"
        specs = [spec_for(pool_cleanup, network, "redis://127.0.0.1:1/0", fake_image, slot) for slot in (1, 2)]
        first, second = (runtime.create(spec) for spec in specs)
        port = specs[0].host_port
        for spec in specs:
            wait_ready(f"http://127.0.0.1:{spec.host_port}/mcp")
        other = docker_client.api.inspect_container(second.container_id)["NetworkSettings"]["Networks"][network]["IPAddress"]
        reach = (
            "import urllib.request, sys\n"
            "try:\n    urllib.request.urlopen(sys.argv[1], timeout=3)\nexcept urllib.error.HTTPError:\n    print('reached')\n"
            "except Exception as error:\n    print('unreachable', type(error).__name__)\nelse:\n    print('reached')\n"
        )
        across = docker_client.api.exec_create(first.container_id, ["/usr/bin/python3", "-c", reach, f"http://{other}:8931/mcp"])
        assert docker_client.api.exec_start(across).decode().startswith("unreachable"), "one container reached another's MCP port"
        itself = docker_client.api.exec_create(first.container_id, ["/usr/bin/python3", "-c", reach, "http://127.0.0.1:8931/mcp"])
        assert docker_client.api.exec_start(itself).decode().startswith("reached"), "the check itself works"
        refused = httpx.get(f"http://127.0.0.1:{port}/mcp", headers={"Host": "evil.example:8931"}, timeout=5)
        assert refused.status_code == 403 and "Access is only allowed at 127.0.0.1:" in refused.text
    finally:
        for container in docker_client.api.containers(all=True, filters={"label": f"cinnamon.pool={pool_cleanup}"}):
            docker_client.api.remove_container(container["Id"], force=True)
        docker_client.api.remove_network(network)


def test_a_paused_container_is_killed_while_frozen_so_it_serves_nothing_more(
    runtime: DockerRuntime, docker_client: docker.DockerClient, pool_cleanup: str, test_network: str, fake_image: str
) -> None:
    spec = spec_for(pool_cleanup, test_network, "redis://127.0.0.1:1/0", fake_image)
    observed = runtime.create(spec)
    wait_ready(f"http://127.0.0.1:{spec.host_port}/mcp")
    docker_client.api.pause(observed.container_id)
    pids = runtime._cgroup_pids(observed.container_id)
    assert pids, "the container's processes are visible in its cgroup"
    assert runtime.kill_processes(observed.container_id) == len(pids)
    for pid in pids:  # still frozen: the kill waits, pending, and is the first thing each process meets on thaw
        status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
        pending = int(status["ShdPnd"], 16) | int(status["SigPnd"], 16)
        assert pending & (1 << (9 - 1)), f"pid {pid}: SIGKILL is not pending ({status['ShdPnd']})"
        assert status["State"].startswith(("D", "S")), status["State"]
    runtime.remove(observed.container_id)
    assert runtime.list(pool_cleanup) == []


def test_a_containers_cgroup_is_found_once_and_looked_for_again_when_it_moves(runtime: DockerRuntime, tmp_path: Path) -> None:
    """The readings of a tick go straight to the directory found before; when it is gone (the
    container removed, or restarted elsewhere) the next reading looks in every place again."""
    planted = DockerRuntime(runtime.client, cgroup_root=tmp_path)
    container_id = "c" * 64
    v1 = tmp_path / "memory" / "docker" / container_id
    v1.mkdir(parents=True)
    (v1 / "memory.usage_in_bytes").write_text(str(300 * 1024 * 1024))
    (v1 / "memory.stat").write_text("cache 1\ntotal_inactive_file 0\n")
    assert planted.memory_mb_cheap(container_id) == 300.0
    (v1 / "memory.usage_in_bytes").write_text(str(310 * 1024 * 1024))
    assert planted.memory_mb_cheap(container_id) == 310.0
    for child in v1.iterdir():
        child.unlink()
    v1.rmdir()
    assert planted.memory_mb_cheap(container_id) is None, "its directory is gone: no reading, and it is forgotten"
    v2 = tmp_path / "system.slice" / f"docker-{container_id}.scope"
    v2.mkdir(parents=True)
    (v2 / "memory.current").write_text(str(200 * 1024 * 1024))
    (v2 / "memory.stat").write_text("inactive_file 0\n")
    assert planted.memory_mb_cheap(container_id) == 200.0
