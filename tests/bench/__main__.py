"""`make bench`: every benchmark section, one table, bench-results.json.

Each row carries a baseline measured in the same run. `python -m tests.bench lease` runs one
section. Sections: lease (real redis-server), pool, supervisor and gateway (real Docker, fake-mcp and
playwright-mcp), jobs, logs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.bench import gateway_bench, jobs_bench, lease_bench, logs_bench, pool_bench, supervisor_bench
from tests.bench.report import emit
from tests.support import start_redis_server, stop

ROOT = Path(__file__).resolve().parents[2]


SECTIONS = ("lease", "pool", "supervisor", "gateway", "jobs", "logs")


def main(argv: list[str]) -> int:
    chosen = argv or list(SECTIONS)
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        print(f"unknown section(s) {sorted(unknown)}; known: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="cinnamon-bench-") as scratch:
        process, url = start_redis_server(Path(scratch))
        try:
            if "lease" in chosen:
                print("section lease: the lease protocol vs a minimal Lua pair and vs per-container Locks with polling", flush=True)
                rows += lease_bench.run(url)
            if "pool" in chosen:
                print("section pool: warm pool vs a fresh container per job (real playwright-mcp)", flush=True)
                rows += pool_bench.run(url, Path(scratch))
            if "supervisor" in chosen:
                print("section supervisor: replacement after docker kill, observe pass, resident memory", flush=True)
                rows += supervisor_bench.run(url, Path(scratch))
            if "gateway" in chosen:
                print("section gateway: each MCP request through the gateway vs sent direct (real playwright-mcp)", flush=True)
                rows += gateway_bench.run(url, Path(scratch))
            if "jobs" in chosen:
                print("section jobs: decorator overhead, cleanup check, E2E throughput", flush=True)
                rows += jobs_bench.run(url, Path(scratch))
            if "logs" in chosen:
                print("section logs: the analyzer over 1,000,000 records", flush=True)
                rows += logs_bench.run(Path(scratch))
        finally:
            stop(process)
    print()
    emit(rows, ROOT / "bench-results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
