"""The soak's command line (``python -m tests.soak``): its arguments, the summary it prints, and
its exit status: 1 when the verdict (verdict.py) names a problem (tests/soak)."""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Callable
from pathlib import Path

import tests.soak
from tests.soak.runner import Soak, soak
from tests.soak.settings import CLIENT_FAULTS, CONVERGE_LIMIT_S, FAULTS, HA_FAULTS, MIN_COMPLETED_SHARE, ROOT
from tests.soak.verdict import verdict


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak", description=tests.soak.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of faults and jobs (default 300)")
    parser.add_argument("--interval", type=float, default=12.0, help="mean seconds between faults, at most (default 12)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--connect-clients", type=int, default=0, help="clients on connect beside the workers (default 0; kill-client needs one)"
    )
    parser.add_argument(
        "--redis-ha",
        action="store_true",
        help="the pool's Redis is a primary, a replica and a Sentinel; failover-redis replaces restart-redis",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="the pool's keys live on a Redis Cluster (3 primaries, 3 replicas); failover-redis kills the primary of the pool's slot",
    )
    parser.add_argument("--faults", default="", help="comma-separated faults to pick from (default: all of the mode's)")
    parser.add_argument("--seed", type=int, default=None, help="the fault sequence's seed (default: random, printed)")
    parser.add_argument(
        "--overlap", action="store_true", help="inject each fault while another is under way, in pairs of two families (make soak)"
    )
    parser.add_argument("--every-fault", action="store_true", help="fail unless every fault kind ran at least once (make soak)")
    parser.add_argument("--out", type=Path, default=ROOT / "soak-results.json")
    parser.add_argument("--workdir", type=Path, default=None, help="where logs and the history go (default: .run/soak-<pid>)")
    args = parser.parse_args(argv)
    if args.duration < args.interval * 2:
        parser.error(f"--duration {args.duration:g} must be at least twice --interval {args.interval:g}")
    if args.redis_ha and args.redis_cluster:
        parser.error("--redis-ha and --redis-cluster: choose one")
    replicated = args.redis_ha or args.redis_cluster
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    workdir = args.workdir or ROOT / ".run" / f"soak-{os.getpid()}"
    faults = tuple(name.strip() for name in args.faults.split(",") if name.strip()) if args.faults else ()
    known = (*(HA_FAULTS if replicated else FAULTS), *(CLIENT_FAULTS if args.connect_clients else ()))
    for name in faults:
        if name not in known:
            parser.error(f"--faults: unknown fault {name!r} (known{' with a replicated Redis' if replicated else ''}: {', '.join(known)})")
    chosen = Soak(
        workdir,
        args.duration,
        args.interval,
        args.workers,
        seed,
        args.redis_ha,
        faults,
        args.connect_clients,
        args.every_fault,
        redis_cluster=args.redis_cluster,
        overlap=args.overlap,
    )
    with soak(chosen) as run:
        results = run.run()
    results["workdir"] = str(workdir)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    jobs, converge = results["jobs"], results["convergence_s"]
    out(
        f"soak {args.duration:g} s, seed {seed}: faults {sum(results['faults_injected'].values())} {results['faults_injected']}\n"
        f"  jobs submitted {jobs['submitted']}, completed {jobs['completed']}, failed {jobs['failed']}, lost {jobs['lost']} "
        f"({jobs['retried']} completed or failed after a retry, {jobs['retried_unexplained']} of them not hit by a recorded fault)\n"
        f"  failed by reason: {jobs['failed_by_reason']}\n"
        f"  failed by fault: {jobs['failed_by_fault']}; failed with no fault to explain it: {jobs['failed_unexplained']}\n"
        f"  jobs hit by a fault {jobs['hit_by_a_fault']}; of the {jobs['not_hit']} others {jobs['not_hit_completed_share']:.2%} completed "
        f"(at least {MIN_COMPLETED_SHARE:.0%})\n"
        f"  double grants {results['double_grants']}, history violations {len(results['violations'])} "
        f"(uses served by the containers: {results['history']['served_by_containers']}), leaked containers {results['leaked_containers']}\n"
        f"  convergence after a fault: max {converge['max']:.1f} s, p50 {converge['p50']:.1f} s, "
        f"over {CONVERGE_LIMIT_S:g} s: {converge['over_limit'] or 'none'}\n"
        f"  written to {args.out}; logs and history in {workdir}"
    )
    for step in results["clock_steps"]:
        out(
            f"  the machine's wall clock stepped {step['size_ms']:+d} ms at monotonic {step['mono']:.0f} ms: a fault nobody injected, {step['jobs']} jobs in flight"
        )
    connect = results["connect"]
    if connect["clients"]:
        out(
            f"  on connect ({connect['clients']} clients): sessions opened {connect['sessions_opened']}, completed "
            f"{connect['sessions_completed']}, failed {connect['sessions_failed']} ({connect['failed_unexplained']} with no fault "
            f"to explain it), clients killed mid-session {connect['killed_mid_session']}"
        )
    problems = verdict(results)
    for problem in problems:
        out(f"SOAK FAILED: {problem}")
    for violation in results["violations"][:20] if problems else ():  # CI keeps only this output: say what was seen
        out(f"  violation: {violation}")
    return 1 if problems else 0
