"""`make bench`: every benchmark section, one table, bench-results.json.

Each row carries a baseline measured in the same run. Sections: pool (this issue); later
issues add lease, supervisor, jobs and logs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.bench import pool_bench
from tests.bench.report import emit
from tests.support import start_redis_server, stop

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="cinnamon-bench-") as scratch:
        process, url = start_redis_server(Path(scratch))
        try:
            print("section pool: warm pool vs a fresh container per job (real playwright-mcp)", flush=True)
            rows = pool_bench.run(url, Path(scratch))
        finally:
            stop(process)
    print()
    emit(rows, ROOT / "bench-results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
