"""Section "logs": the analyzer over 1,000,000 records (records per second, peak resident
memory), beside reading the same files line by line without parsing (the floor)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from tests.bench.report import Row

RECORDS = 1_000_000
ANALYZE = """
import json, resource, sys, time
from cinnamon_pool.logs.analyzer import Analyzer
from cinnamon_pool.logs.files import daily_files, iter_records
started = time.perf_counter()
if sys.argv[2] == "analyze":
    analyzer = Analyzer().feed(iter_records(sys.argv[1]))
    analyzer.report()
    count = analyzer.records
else:
    count = 0
    for path in daily_files(__import__("pathlib").Path(sys.argv[1])):
        with open(path, encoding="utf-8") as handle:
            count += sum(1 for line in handle if line.startswith("["))
print(json.dumps({"records": count, "seconds": time.perf_counter() - started, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def generate(root: Path, count: int) -> None:
    """A month of usage records for 10 containers, written straight as text."""
    folder = root / "containers"
    folder.mkdir(parents=True, exist_ok=True)
    start = dt.datetime(2025, 1, 1)
    per_day = count // 30 + 1
    written = 0
    for day in range(31):
        date = start + dt.timedelta(days=day)
        lines = []
        at = date.strftime("%Y-%m-%d %H:%M:%S")
        for i in range(min(per_day, count - written)):
            if i % 500 == 0:
                at = (date + dt.timedelta(seconds=i * 86400 // per_day)).strftime("%Y-%m-%d %H:%M:%S")
            name = f"container-{i % 10 + 1:03d}"
            if i % 2 == 0:
                lines.append(
                    f"[{at}] INFO  {name} | ALLOCATED\n  └─ Test Run: run-{day}-{i}\n  └─ Wait Time: 0.{i % 1000:03d}s\n  └─ Memory Usage: {150 + i % 200}MB\n  └─ Available Containers: 3\n"
                )
            else:
                outcome = "infra_error" if i % 97 == 0 else "ok"
                lines.append(
                    f"[{at}] INFO  {name} | RELEASED\n  └─ Test Run: run-{day}-{i}\n  └─ Outcome: {outcome}\n  └─ Duration: 2.50s\n  └─ Memory Usage: 180MB\n  └─ Consecutive Errors: 0/3\n"
                )
        (folder / f"container-usage-{date:%Y-%m-%d}.log").write_text("".join(lines), encoding="utf-8")
        written += len(lines)
        if written >= count:
            return


def _measure(root: Path, mode: str) -> dict[str, float]:
    output = subprocess.run([sys.executable, "-c", ANALYZE, str(root), mode], capture_output=True, text=True, check=True).stdout
    return json.loads(output)  # type: ignore[no-any-return]


def run(workdir: Path) -> list[Row]:
    root = workdir / "logs-1m"
    generate(root, RECORDS)
    analyzed, floor = _measure(root, "analyze"), _measure(root, "read")
    assert analyzed["records"] == RECORDS == floor["records"], (analyzed, floor)
    rate, floor_rate = analyzed["records"] / analyzed["seconds"], floor["records"] / floor["seconds"]
    print(f"  analyzer: {rate:,.0f} records/s, peak {analyzed['rss_mb']:.0f} MB; plain read {floor_rate:,.0f} records/s", flush=True)
    return [
        Row(
            "logs",
            "analyzer over 1,000,000 records (vs reading the lines only)",
            rate,
            floor_rate,
            "records/s",
            "value >= 100000",
        ),
        Row("logs", "analyzer peak resident memory (vs reading the lines only)", analyzed["rss_mb"], floor["rss_mb"], "MB", "value < 200"),
    ]
