"""The compose stack, up with locally built images: jobs run through it, then it goes down."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.conftest import ROOT
from tests.support import failure_of

pytestmark = [pytest.mark.docker, pytest.mark.e2e]
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
REDIS_URL = "redis://127.0.0.1:6390/0"


@pytest.fixture
def stack(docker_client: docker.DockerClient, playwright_image: str, tmp_path: Path) -> Iterator[str]:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is missing: run `make services` (installs Debian's docker-compose)")
    for image in ("cinnamon-pool/app:local", "cinnamon-pool/redis:local"):
        try:
            docker_client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {image} is missing: run `make images`")
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o777)
    logs.chmod(0o777)
    project = f"cinnamontest{os.getpid()}"
    env = {**os.environ, "CINNAMON_LOGS": str(logs)}
    command = ["docker-compose", "-f", str(COMPOSE_FILE), "-p", project]
    subprocess.run([*command, "up", "-d", "--scale", "worker=2"], env=env, check=True, capture_output=True, timeout=180)
    try:
        yield str(logs)
    finally:
        subprocess.run([*command, "down", "-v"], env=env, capture_output=True, timeout=180, check=False)
        for container in docker_client.api.containers(all=True, filters={"label": "cinnamon.pool=compose"}):
            docker_client.api.remove_container(container["Id"], force=True)


def test_jobs_run_through_the_compose_stack_and_metrics_are_served(stack: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    deadline = time.monotonic() + 90
    while True:
        try:
            if len(client.zrange("cinnamon:{compose}:free", 0, -1)) >= 2:
                break
        except redis.ConnectionError:
            pass
        assert time.monotonic() < deadline, "the stack did not bring up 2 containers in 90 s"
        time.sleep(0.5)
    queue = Queue("cinnamon", connection=client, serializer=JSONSerializer)
    jobs = [queue.enqueue("workers.jobs.sign_in_flow", f"user{i}@example.test", job_timeout=120) for i in range(2)]
    deadline = time.monotonic() + 180
    while not all(Job.fetch(j.id, connection=client, serializer=JSONSerializer).is_finished for j in jobs):
        failed = [j for j in jobs if Job.fetch(j.id, connection=client, serializer=JSONSerializer).is_failed]
        assert not failed, failure_of(Job.fetch(failed[0].id, connection=client, serializer=JSONSerializer))
        assert time.monotonic() < deadline, "the jobs did not finish in 180 s"
        time.sleep(0.5)
    metrics = httpx.get("http://127.0.0.1:9464/metrics", timeout=5).text
    assert 'cinnamon_pool_leases_granted_total{pool="compose"}' in metrics
    through = httpx.get("http://127.0.0.1:8940/metrics", timeout=5).text
    assert 'cinnamon_pool_gateway_requests_total{method="POST",pool="compose"}' in through, "the jobs went through the gateway"
    deadline = time.monotonic() + 30
    while sum(f.read_text().count("| RELEASED") for f in (Path(stack) / "containers").glob("container-usage-*.log")) < 2:
        assert time.monotonic() < deadline, "the supervisor in the stack did not write the usage log"
        time.sleep(0.3)
