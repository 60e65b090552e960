"""Section "lease": the lease protocol on a real redis-server, against baselines run in the same
process tree: (a) the floor, a minimal Lua acquire + release pair; (b) the naive design, one
redis-py ``Lock`` per container tried in turn, waiting by polling every 10 ms; (c) for the
hand-off, a blocking free list (BLMOVE), the fair hand-made alternative to waiting in line."""

from __future__ import annotations

import functools
import multiprocessing as mp
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import redis
from redis.lock import Lock

from cinnamon_pool.config import PoolConfig
from cinnamon_pool.connect import redis_client
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.handle import ContainerLease
from cinnamon_pool.lease.store import LeaseStore
from cinnamon_pool.model import Holder
from tests.bench.report import Row, percentile
from tests.lease_helpers import record, store_with
from tests.support import RedisHA, stream_entries

FLOOR_ACQUIRE = """
local name = redis.call('ZPOPMIN', KEYS[1])[1]
if not name then return false end
redis.call('HSET', KEYS[2], name, ARGV[1])
return name
"""
FLOOR_RELEASE = """
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], 0, ARGV[1])
return 1
"""
POLL_S = 0.01


WARM_UP = 20  # pairs each client runs before it starts timing (connections, script cache)
ROUNDS = 4  # each way runs its pairs in this many turns, alternating with the others


def _pairs_protocol(url: str, pool: str, count: int) -> list[float]:
    store = LeaseStore(redis.Redis.from_url(url), pool)
    holder = Holder("bench")
    samples = []
    for _ in range(WARM_UP):
        grant = store.acquire(holder, timeout_s=30)
        store.release(grant.name, grant.token)
    for _ in range(count):
        started = time.perf_counter()
        grant = store.acquire(holder, timeout_s=30)
        store.release(grant.name, grant.token)
        samples.append(time.perf_counter() - started)
    return samples


def _pairs_floor(url: str, pool: str, count: int) -> list[float]:
    client = redis.Redis.from_url(url)
    acquire, release = client.register_script(FLOOR_ACQUIRE), client.register_script(FLOOR_RELEASE)
    keys = [f"floor:{{{pool}}}:free", f"floor:{{{pool}}}:leases"]
    samples = []
    for round_ in range(WARM_UP + count):
        started = time.perf_counter()
        name = acquire(keys=keys, args=["holder"])
        while name is None:  # clients outnumber containers: try again at once (the floor has no queue)
            name = acquire(keys=keys, args=["holder"])
        release(keys=keys, args=[name])
        if round_ >= WARM_UP:
            samples.append(time.perf_counter() - started)
    return samples


def _naive_acquire(client: redis.Redis, pool: str, containers: int) -> redis.lock.Lock:
    while True:
        for slot in range(containers):
            lock: Lock = client.lock(f"naive:{pool}:{slot}", timeout=30)
            if lock.acquire(blocking=False):
                return lock
        time.sleep(POLL_S)


def _pairs_naive(url: str, pool: str, count: int, containers: int) -> list[float]:
    client = redis.Redis.from_url(url)
    samples = []
    for round_ in range(WARM_UP + count):
        started = time.perf_counter()
        _naive_acquire(client, pool, containers).release()
        if round_ >= WARM_UP:
            samples.append(time.perf_counter() - started)
    return samples


def _run_clients(target: Callable[..., list[float]], clients: int, args: tuple[object, ...]) -> list[float]:
    with mp.get_context("fork").Pool(clients) as workers:
        results = workers.starmap(target, [args] * clients)
    return [sample for result in results for sample in result]


def _handoff(url: str, pool: str, way: str, rounds: int) -> list[float]:
    """A waiter blocks for the only container; the holder releases; time until the waiter has it.
    ``way``: the lease protocol; Locks polled every 10 ms; or a blocking free list (BLMOVE from
    ``free`` to ``held``, LMOVE back to release), the way users build one by hand.

    The waiter comes from a fork server, not a fork of this process: a fork just before the timed
    release would make this process copy every memory page it touches first (copy on write), and
    the hand-off would time that (~1.5 ms here) rather than the way it is made. The release waits
    until Redis reports the waiter blocked (or, polling, three polls after it began)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    samples = []
    free, held = f"freelist:{pool}:free", f"freelist:{pool}:held"
    client = redis.Redis.from_url(url)
    if way == "freelist":
        client.delete(free, held)
        client.rpush(free, "container-001")
    store = LeaseStore(client, pool)
    for _ in range(rounds):
        if way == "polling":
            lock = _naive_acquire(client, pool, 1)
        elif way == "freelist":
            client.blmove(free, held, 5, "LEFT", "RIGHT")
        else:
            grant = store.acquire(Holder("holder"), timeout_s=5)
        got = ctx.Queue()
        waiter = ctx.Process(target=_handoff_waiter, args=(url, pool, way, got))
        waiter.start()
        assert got.get(timeout=30) == "ready"
        _wait_until_waiting(client, way)
        released_at = time.monotonic()  # CLOCK_MONOTONIC is one clock for every process here
        if way == "polling":
            lock.release()
        elif way == "freelist":
            client.lmove(held, free, "RIGHT", "RIGHT")
        else:
            store.release(grant.name, grant.token)
        samples.append(got.get(timeout=10) - released_at)
        waiter.join(timeout=10)
    return samples


def _wait_until_waiting(client: redis.Redis, way: str) -> None:
    if way == "polling":
        time.sleep(3 * POLL_S)
        return
    deadline = time.monotonic() + 10
    while int(client.info("clients")["blocked_clients"]) < 1:
        assert time.monotonic() < deadline, "the waiter did not block within 10 s"
        time.sleep(0.001)


def _handoff_waiter(url: str, pool: str, way: str, got: mp.Queue) -> None:  # type: ignore[type-arg]
    client = redis.Redis.from_url(url)
    store = LeaseStore(client, pool)
    client.ping()  # connected before it says so
    got.put("ready")
    if way == "polling":
        lock = _naive_acquire(client, pool, 1)
        got.put(time.monotonic())
        lock.release()
    elif way == "freelist":
        free, held = f"freelist:{pool}:free", f"freelist:{pool}:held"
        client.blmove(free, held, 10, "LEFT", "RIGHT")
        got.put(time.monotonic())
        client.lmove(held, free, "RIGHT", "RIGHT")
    else:
        grant = store.acquire(Holder("waiter"), timeout_s=10)
        got.put(time.monotonic())
        store.release(grant.name, grant.token)


def double_grants(client: redis.Redis, pool: str) -> int:
    """Grants made while the same container's previous lease was still open (must be 0)."""
    open_lease: dict[str, str | None] = defaultdict(lambda: None)
    doubles = 0
    for fields in stream_entries(client, PoolKeys(pool).events):
        kind, name = fields[b"kind"], fields[b"name"].decode()
        if kind == b"granted":
            doubles += open_lease[name] is not None
            open_lease[name] = fields[b"token"].decode()
        elif kind in {b"released", b"revoked"}:
            open_lease[name] = None
    return doubles


def run(url: str) -> list[Row]:
    client = redis.Redis.from_url(url)
    client.flushall()
    rows: list[Row] = []
    total_doubles = 0
    # (clients, containers, pairs per client): one container each, then contention (32 on 4).
    for clients, containers, per_client in ((1, 1, 2000), (8, 8, 300), (32, 32, 80), (32, 4, 20)):
        pool = f"bench{clients}on{containers}"
        store_with(client, containers, pool=pool)
        client.zadd(f"floor:{{{pool}}}:free", {f"c{i}": 0 for i in range(containers)})
        ways: dict[str, tuple[Callable[..., list[float]], tuple[object, ...]]] = {
            "ours": (_pairs_protocol, (url, pool, per_client // ROUNDS)),
            "floor": (_pairs_floor, (url, pool, per_client // ROUNDS)),
            "naive": (_pairs_naive, (url, pool, per_client // ROUNDS, containers)),
        }
        timed: dict[str, list[float]] = defaultdict(list)
        for round_ in range(ROUNDS):  # in turns, the order reversed every other round: drift hits all three alike
            for way in list(ways)[:: 1 if round_ % 2 == 0 else -1]:
                pairs, args = ways[way]
                timed[way] += _run_clients(pairs, clients, args)
        ours, floor, naive = timed["ours"], timed["floor"], timed["naive"]
        total_doubles += double_grants(client, pool)
        label = f"{clients} client(s)" if clients == containers else f"{clients} clients on {containers} containers"
        print(
            f"  {label}: protocol p50 {percentile(ours, 50) * 1e3:.3f} ms, floor {percentile(floor, 50) * 1e3:.3f} ms, naive {percentile(naive, 50) * 1e3:.3f} ms",
            flush=True,
        )
        # The targets: p50 within 1.5x the floor alone, 2.5x under contention; against the
        # Locks, p50 no slower and p99 at most half.
        for baseline, samples, q, target in (
            ("Lua floor", floor, 50, "ratio <= 1.5" if clients == 1 else "ratio <= 2.5"),
            ("Lua floor", floor, 99, "ratio <= 2"),
            ("Locks polled every 10 ms", naive, 50, "ratio <= 1"),
            ("Locks polled every 10 ms", naive, 99, "ratio <= 0.5"),
        ):
            value, base = percentile(ours, q) * 1e3, percentile(samples, q) * 1e3
            rows.append(Row("lease", f"acquire+release pair, {label}, p{q} (vs {baseline})", value, base, "ms", target))
    store_with(client, 1, pool="handoff")
    handoff = _handoff(url, "handoff", "protocol", rounds=40)
    total_doubles += double_grants(client, "handoff")
    freelist = _handoff(url, "freelist-handoff", "freelist", rounds=40)
    polling = _handoff(url, "naive-handoff", "polling", rounds=40)
    for q in (50, 99):
        rows.append(
            Row(
                "lease",
                f"hand-off release -> waiting acquire, p{q} (vs a blocking free list, BLMOVE)",
                percentile(handoff, q) * 1e3,
                percentile(freelist, q) * 1e3,
                "ms",
                "value <= 1.5" if q == 50 else "value <= 5",
            )
        )
    rows.append(
        Row(
            "lease",
            "hand-off release -> waiting acquire, p50 (vs Locks polled every 10 ms)",
            percentile(handoff, 50) * 1e3,
            percentile(polling, 50) * 1e3,
            "ms",
            "ratio < 1",
        )
    )
    rows.append(Row("lease", "double grants across the run", float(total_doubles), None, "count", "value == 0"))
    rows.append(_check_before_use(client))
    rows += _durable_grants()
    return rows


def _durable_grants(count: int = 400) -> list[Row]:
    """What ``redis.wait_replicas = 1`` costs: pairs on a primary with a replica and a Sentinel,
    each grant WAITed for, against the same pairs on the same primary without the WAIT."""
    with tempfile.TemporaryDirectory(prefix="cinnamon-bench-ha-") as workdir:
        ha = RedisHA(Path(workdir))
        try:
            settings = PoolConfig.from_tables({"redis": {"sentinels": ha.sentinels, "service": ha.SERVICE}}).redis
            timed = {}
            for replicas in (1, 0):
                store = LeaseStore(redis_client(settings), f"durable{replicas}", wait_replicas=replicas)
                store.register(record(1))
                samples = []
                for round_ in range(WARM_UP + count):
                    started = time.perf_counter()
                    grant = store.acquire(Holder("durable"), timeout_s=10)
                    store.release(grant.name, grant.token)
                    if round_ >= WARM_UP:
                        samples.append(time.perf_counter() - started)
                timed[replicas] = samples
        finally:
            ha.stop()
    durable, plain = timed[1], timed[0]
    print(
        f"  durable grants (WAIT 1 replica): pair p50 {percentile(durable, 50) * 1e3:.3f} ms, without {percentile(plain, 50) * 1e3:.3f} ms",
        flush=True,
    )
    return [
        Row("lease", f"acquire+release pair, grant WAITed for 1 replica, p{q} (vs no WAIT, same primary)",
            percentile(durable, q) * 1e3, percentile(plain, q) * 1e3, "ms", target)
        for q, target in ((50, "ratio <= 2"), (99, "ratio <= 3"))
    ]  # fmt: skip


def _check_before_use(client: redis.Redis, count: int = 3000) -> Row:
    """What every use of the endpoint pays for self-fencing: the local deadline and one HGET to
    Redis (ContainerLease.check with the pool's confirm), against a bare PING round trip."""
    store = store_with(client, 1, pool="check")
    grant = store.acquire(Holder("check"), timeout_s=1)
    lease = ContainerLease.from_grant("check", grant, fence_after_s=60, confirm=functools.partial(store.holds, grant.name, grant.token))
    checks, pings = [], []
    for _ in range(count):
        started = time.perf_counter()
        lease.check()
        checks.append(time.perf_counter() - started)
        started = time.perf_counter()
        client.ping()
        pings.append(time.perf_counter() - started)
    store.release(grant.name, grant.token)
    print(f"  lease check before a use p50 {percentile(checks, 50) * 1e3:.3f} ms, PING {percentile(pings, 50) * 1e3:.3f} ms", flush=True)
    return Row(
        "lease",
        "lease check before each use (deadline + HGET), p50 (vs PING)",
        percentile(checks, 50) * 1e3,
        percentile(pings, 50) * 1e3,
        "ms",
        "ratio <= 2",
    )
