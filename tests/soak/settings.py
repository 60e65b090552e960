"""The soak's settings: its parts' ports and image, the faults it knows, its limits (tests/soak)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAKE_IMAGE = "cinnamon-pool/fake-mcp:test"
PORTS = "3700-3759"
TTL_S = 4.0
RETRIES = 2  # rq retries a job that failed (its lease lost to a fault, say) this many times
PAUSE_S = 5.0  # past the health rule (2 failed probes, 1 s apart): the paused container is replaced
CONVERGE_LIMIT_S = 10.0  # the pool is whole again this soon after each fault, or the soak fails naming it
CONVERGE_WAIT_S = 60.0  # how long a slower convergence is still measured
MIN_COMPLETED_SHARE = 0.99  # of the jobs no fault hit
PROCESS_FAULTS = (
    "kill-worker",
    "kill-horse",
    "stop-horse",
    "kill-container",
    "pause-container",
    "kill-supervisor",
    "kill-gateway",
    "restart-gateway",  # SIGTERM: the graceful stop of a deploy
)
# On one Redis the workers and the gateway reach it through fault proxies (tests/faults/proxy.py): a
# partition refuses and drops their connections for PARTITION_S, a slow network delays each chunk
NETWORK_FAULTS = ("partition-workers", "partition-gateway", "slow-redis")
# The logs folder on a small tmpfs of its own (mounting needs root: elsewhere the fault is left out),
# filled to the last byte for FULL_DISK_S: records are dropped, no job may fail, writing resumes
DISK_FAULTS = ("full-disk",) if os.geteuid() == 0 else ()
LOGS_TMPFS_SIZE, FULL_DISK_S = "64m", 5.0
# Opt-in, as for the tests (CINNAMON_DESTRUCTIVE_TESTS=1): SIGTERM the dockerd that
# compose/scripts/services.sh started (every container dies with it), then the script starts it again
DOCKERD_PID = ROOT / ".run" / "dockerd.pid"
DOCKERD_FAULTS = ("restart-dockerd",) if os.environ.get("CINNAMON_DESTRUCTIVE_TESTS") == "1" else ()
FAULTS = (*PROCESS_FAULTS, "restart-redis", *NETWORK_FAULTS, *DISK_FAULTS, *DOCKERD_FAULTS)
# with --redis-ha or --redis-cluster the clients find the primary themselves, past any proxy
HA_FAULTS = (*PROCESS_FAULTS, "failover-redis", *DISK_FAULTS, *DOCKERD_FAULTS)
PARTITION_S = TTL_S + 1.0  # longer than a lease's TTL: holders cut off from Redis must fence themselves
SLOW_S, SLOW_CHUNK_S = 5.0, 0.05  # slow-redis: this long, each chunk each way delayed this much
CLIENT_FAULTS = ("kill-client",)  # with --connect-clients
# With --overlap, two faults under way at once are never of one family (they would pick the same victim)
FAMILIES = (
    {"kill-horse", "stop-horse", "kill-worker"},
    {"kill-container", "pause-container", "restart-dockerd"},
    {*NETWORK_FAULTS},  # the proxies hold one fault at a time
)
OVERLAP_AFTER_S = (0.2, 2.0)  # the second fault of a pair begins this long after the first (uniform)
# Faults that start a process again (its replacement): injected from the soak's main thread, as the
# processes it starts die with the thread that started them (PR_SET_PDEATHSIG); a pair holds one at most
SPAWNING = {"kill-supervisor", "kill-gateway", "restart-gateway", "restart-redis", "failover-redis", "restart-dockerd"}
CONNECT_IDLE_S = 2.0  # gateway.session_idle_s: a killed client's session ends this soon
CONNECT_GRACE_S = 15.0  # a session that fails this long after a fault ended is still its doing


def say(message: str, started: float) -> None:
    print(f"[soak {time.monotonic() - started:6.1f}s] {message}", flush=True)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (an rq worker's work horse), read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                # The ppid is the 2nd field after the parenthesised command name.
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found
