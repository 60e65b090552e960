"""The operator's commands as operators run them: `cinnamon-pool scale`, `kill` and `status`
processes against a real `cinnamon-pool supervise` process, from the pool's TOML file."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from cinnamon_pool.errors import LeaseLost, PoolExhausted
from cinnamon_pool.lease.handle import ContainerLease
from cinnamon_pool.logs.files import iter_records
from cinnamon_pool.model import Grant, Holder
from tests.conftest import test_config
from tests.integration.supervised import eventually
from tests.integration.test_supervisor_processes import BIN, Supervisors, supervise_from_toml

pytestmark = [pytest.mark.docker, pytest.mark.redis]


@pytest.fixture(params=[4])
def operated(
    request: pytest.FixtureRequest,
    real_redis: redis.Redis,
    redis_server: str,
    pool_cleanup: str,
    test_network: str,
    fake_image: str,
    tmp_path: Path,
) -> Iterator[Supervisors]:
    """A supervised pool of 2 from its TOML file; ``request.param``: its max_size."""
    config = test_config(pool_cleanup, redis_server, image=fake_image, network=test_network)
    yield from supervise_from_toml(Supervisors, config, redis_server, tmp_path, max_size=request.param)


def cli(running: Supervisors, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CINNAMON_CONFIG": str(running.config_path), "COLUMNS": "200"}
    return subprocess.run([str(BIN / "cinnamon-pool"), *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def pool_records(running: Supervisors, action: str) -> list[dict[str, str]]:
    return [dict(r.details) for r in iter_records(running.workdir / "logs") if r.action == action]


def test_scale_goes_through_the_supervisor_and_outlives_its_restart(operated: Supervisors) -> None:
    operated.start()
    eventually(operated.ready, what="pool ready")
    scaled = cli(operated, "scale", "3")
    assert scaled.returncode == 0, scaled.stderr
    assert "desired size 3 (was 2)" in scaled.stdout
    eventually(lambda: operated.pool.status()["available"] == 3, what="a third container")
    assert any(r.get("Reason") == "operator: cinnamon-pool scale" and r.get("To") == "3" for r in pool_records(operated, "POOL_EXPANDED"))

    operated.processes[0].kill()
    operated.processes[0].wait(timeout=10)
    operated.start()
    eventually(lambda: "leading" in operated.output(1), what="the new supervisor leads")
    eventually(lambda: operated.pool.store.snapshot().desired.get(operated.pool.store.snapshot().containers["container-001"].host) == 3)
    assert operated.pool.status()["total"] == 3, "the new supervisor adopts the operator's size"

    refused = cli(operated, "scale", "9")
    assert refused.returncode == 1 and "size 9 is outside pool.min_size..max_size (1..4)" in refused.stderr
    wrong_host = cli(operated, "scale", "2", "--host", "elsewhere")
    assert wrong_host.returncode == 1 and "--host 'elsewhere' is not a host of pool" in wrong_host.stderr


def test_kill_ends_the_lease_of_a_test_run_and_recycles_its_container(operated: Supervisors) -> None:
    operated.start()
    eventually(operated.ready, what="pool ready")
    store = operated.pool.store
    grant = store.acquire(Holder("run-to-kill"), timeout_s=10)
    lease = ContainerLease.from_grant(operated.pool.name, grant, 20.0, confirm=lambda: store.holds(grant.name, grant.token))
    lease.check()

    killed = cli(operated, "kill", "run-to-kill")
    assert killed.returncode == 0, killed.stderr
    assert f"{grant.name}: lease of test run 'run-to-kill' ended" in killed.stdout
    with pytest.raises(LeaseLost):
        lease.check()
    with pytest.raises(LeaseLost):
        store.renew(grant.name, grant.token)
    eventually(lambda: any(r.get("Reason") == "operator" for r in pool_records(operated, "CONTAINER_RESTART")), what="a restart")
    eventually(lambda: operated.pool.status()["available"] == 2, what="back in the pool")

    unknown = cli(operated, "kill", "nobody")
    assert unknown.returncode == 1 and "no lease of test run 'nobody'" in unknown.stderr


@pytest.mark.parametrize("operated", [2], indirect=True)  # it cannot grow: a third job waits
def test_status_shows_each_leases_age_and_the_wait_queue(operated: Supervisors) -> None:
    operated.start()
    eventually(operated.ready, what="pool ready")
    store = operated.pool.store
    held = [store.acquire(Holder(f"holder-{i}"), timeout_s=10) for i in range(2)]
    outcome: list[Grant | BaseException] = []

    def wait_in_line() -> None:
        try:
            outcome.append(store.acquire(Holder("in-line", worker="w-7"), timeout_s=60))
        except PoolExhausted as error:
            outcome.append(error)

    waiting = threading.Thread(target=wait_in_line)
    waiting.start()
    eventually(lambda: operated.pool.status()["waiting"] == 1, what="one job waits")
    shown = cli(operated, "status")
    as_json = json.loads(cli(operated, "status", "--json").stdout)
    store.release(held[0].name, held[0].token)  # the pool cannot grow (2 of 2): the waiter gets this one
    waiting.join()
    assert [getattr(got, "name", got) for got in outcome] == [held[0].name], "the third job waited in line for a container"
    held[0] = cast(Grant, outcome[0])
    assert shown.returncode == 0, shown.stderr
    assert "LEASE AGE" in shown.stdout and "waiting, first in line first" in shown.stdout
    assert "in-line" in shown.stdout and "w-7" in shown.stdout
    [queued] = as_json["queue"]
    assert queued["test_run_id"] == "in-line" and queued["worker"] == "w-7" and queued["waiting_s"] >= 0
    leased = [c for c in as_json["containers"] if c["test_run_id"]]
    assert sorted(c["test_run_id"] for c in leased) == ["holder-0", "holder-1"]
    assert all(c["lease_age_s"] >= 0 and c["allocated_at"] for c in leased)
    for grant in held:
        store.release(grant.name, grant.token)
