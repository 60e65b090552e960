"""`make bench`: every benchmark section, one table, bench-results.json.

Each row carries a baseline measured in the same run and a checkable target (tests/bench/report.py);
the misses are listed at the end and the exit status is 1 when there is any. `python -m tests.bench
lease` runs one section; `--cpus 1` sets the playwright-mcp containers' CPU share for the signin
section. Sections: signin (the sign-in job as users feel it), traces (a trace per lease, the dashboard), lease (real redis-server), pool,
supervisor, scale, gateway and connect (real Docker, fake-mcp and playwright-mcp), jobs, logs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.bench import (
    connect_bench,
    gateway_bench,
    jobs_bench,
    lease_bench,
    logs_bench,
    pool_bench,
    scale_bench,
    signin_bench,
    supervisor_bench,
    traces_bench,
)
from tests.bench.report import emit
from tests.support import start_redis_server, stop

ROOT = Path(__file__).resolve().parents[2]


SECTIONS = ("signin", "traces", "lease", "pool", "supervisor", "scale", "gateway", "connect", "jobs", "logs")


def main(argv: list[str]) -> int:
    cpus = 0.5
    if "--cpus" in argv:
        at = argv.index("--cpus")
        try:
            cpus = float(argv[at + 1])
        except (IndexError, ValueError):
            print(f"--cpus needs a number, got {argv[at + 1 : at + 2]}", file=sys.stderr)
            return 2
        argv = argv[:at] + argv[at + 2 :]
    chosen = argv or list(SECTIONS)
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        print(f"unknown section(s) {sorted(unknown)}; known: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="cinnamon-bench-") as scratch:
        process, url = start_redis_server(Path(scratch))
        try:
            if "signin" in chosen:
                print(
                    f"section signin: the sign-in job, prepared sessions vs a new session vs a fresh container (cpus {cpus:g})", flush=True
                )
                rows += signin_bench.run(url, Path(scratch), cpus)
            if "traces" in chosen:
                print("section traces: a sign-in job with its trace kept vs artifacts='never'; the dashboard's runs page", flush=True)
                rows += traces_bench.run(url, Path(scratch))
            if "lease" in chosen:
                print("section lease: the lease protocol vs a minimal Lua pair and vs per-container Locks with polling", flush=True)
                rows += lease_bench.run(url)
            if "pool" in chosen:
                print("section pool: warm pool vs a fresh container per job (real playwright-mcp)", flush=True)
                rows += pool_bench.run(url, Path(scratch))
            if "supervisor" in chosen:
                print("section supervisor: replacement after docker kill, observe pass, resident memory", flush=True)
                rows += supervisor_bench.run(url, Path(scratch))
            if "scale" in chosen:
                print("section scale: 10, 30 and 100 fake-mcp containers on 1 and 3 hosts (each figure vs its value at 10)", flush=True)
                rows += scale_bench.run(url, Path(scratch))
            if "gateway" in chosen:
                print("section gateway: each MCP request through the gateway vs sent direct (real playwright-mcp)", flush=True)
                rows += gateway_bench.run(url, Path(scratch))
            if "connect" in chosen:
                print("section connect: sessions on connect (an API key, one URL) vs ContainerPool.lease (real playwright-mcp)", flush=True)
                rows += connect_bench.run(url, Path(scratch))
            if "jobs" in chosen:
                print("section jobs: decorator overhead, cleanup check, E2E throughput", flush=True)
                rows += jobs_bench.run(url, Path(scratch))
            if "logs" in chosen:
                print("section logs: the analyzer over 1,000,000 records", flush=True)
                rows += logs_bench.run(Path(scratch))
        finally:
            stop(process)
    print()
    missed = emit(rows, ROOT / "bench-results.json")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
