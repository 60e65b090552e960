"""What a lease pair costs inside Redis, in instructions: deterministic where timings on a shared
machine are not. `python -m tests.bench.lua_cost [pairs]` starts its own redis-server (AOF on, as
`make services` runs it) under valgrind's callgrind, runs the floor's pair (lease_bench.FLOOR_*)
and the lease protocol's (LeaseStore.acquire + release, the real client), and prints the
instructions Redis spent per pair on each. A profiling aid, not a bench row: it needs valgrind
(Debian's package) and runs Redis about 50 times slower."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from cinnamon_pool.model import Holder
from tests.bench.lease_bench import FLOOR_ACQUIRE, FLOOR_RELEASE
from tests.lease_helpers import store_with
from tests.support import free_port


def main(argv: list[str]) -> int:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("lua_cost needs valgrind: apt-get install valgrind", file=sys.stderr)
        return 2
    pairs = int(argv[0]) if argv else 300
    with tempfile.TemporaryDirectory(prefix="lua-cost-") as folder:
        port = free_port()
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/out.%p", "redis-server", "--port", str(port),
             "--bind", "127.0.0.1", "--appendonly", "yes", "--save", "", "--dir", folder],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            client = redis.Redis(port=port)
            deadline = time.monotonic() + 60
            while not _answers(client):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("redis-server under valgrind did not start within 60 s")
                time.sleep(0.2)
            for label, pair in (("floor (minimal Lua pair)", _floor_pair(client)), ("lease protocol", _protocol_pair(client))):
                print(f"{label:26s} {_instructions(server.pid, folder, pair, pairs):>10,.0f} instructions per pair", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=60)
    return 0


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.BusyLoadingError):
        return False


def _floor_pair(client: redis.Redis) -> Callable[[], None]:
    acquire, release = client.register_script(FLOOR_ACQUIRE), client.register_script(FLOOR_RELEASE)
    keys = ["floor:{cost}:free", "floor:{cost}:leases"]
    client.zadd(keys[0], {"c1": 0})

    def pair() -> None:
        release(keys=keys, args=[acquire(keys=keys, args=["holder"])])

    return pair


def _protocol_pair(client: redis.Redis) -> Callable[[], None]:
    store, holder = store_with(client, 1, pool="cost"), Holder("cost")

    def pair() -> None:
        grant = store.acquire(holder, timeout_s=5)
        store.release(grant.name, grant.token)

    return pair


def _instructions(pid: int, folder: str, pair: Callable[[], None], pairs: int) -> float:
    """Instructions Redis ran per ``pair``: callgrind's counters zeroed, the pairs run, dumped."""
    for _ in range(20):  # warm: scripts loaded, connections open
        pair()
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    for _ in range(pairs):
        pair()
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    dump = max(glob.glob(f"{folder}/out.{pid}.*"), key=os.path.getmtime)
    found = re.search(r"^(?:summary|totals): (\d+)", Path(dump).read_text(), re.MULTILINE)
    os.remove(dump)
    if found is None:
        raise RuntimeError(f"no instruction count in {dump}")
    return int(found.group(1)) / pairs


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
