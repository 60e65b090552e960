"""`make soak DURATION=300`: jobs flow through the pool while faults are injected at random.

Real parts: two private redis-servers (rq's queue on one; the pool's lease store on the other,
which the soak restarts empty), the real Docker engine with the fake-mcp image, a
`cinnamon-pool supervise` process, a `cinnamon-pool gateway` process (the jobs' way in) and
forking `rq worker` processes (kept at their number, as a process manager would). Every few seconds one fault, in rounds (each kind once per round, in a random order; ``--every-fault`` fails the run unless each ran):

  kill-worker      SIGKILL an rq worker (its work horse goes on); a new worker is started
  kill-horse       SIGKILL a work horse mid-job
  stop-horse       SIGSTOP a work horse past its lease TTL, then SIGCONT (it must fence itself)
  kill-container   docker kill a pool container
  pause-container  docker pause a pool container for 5 s (past the health rule), then unpause
  kill-supervisor  SIGKILL the supervisor and start a new one
  kill-gateway     SIGKILL the gateway and start a new one half a second later (every job in flight is hit)
  restart-redis    kill the pool's Redis and start it again empty (amnesia; the soak restores its API key)
  kill-client      SIGKILL a client on connect mid-session (with --connect-clients); a new one is started

With ``--connect-clients N``, N processes (tests/faults/connect_client.py) use the pool as any MCP
client does, with an API key on the connect URL and no lease token of their own, beside the rq
workers: with 2 beside 4 workers, a third of the load. Their sessions are checked like jobs: the
history checker sees their uses under the lease the container saw, and a session that failed
must have been hit by a fault (one that began before it failed and ended less than
``CONNECT_GRACE_S`` before).

Each fault is recorded in the history (faults.jsonl) with the rq jobs it hit: the job of a
killed or stopped work horse or worker, the job holding a killed or paused container (a killed
one: every job granted it from the moment the injector picked it until the supervisor has
replaced it), every job in flight when Redis restarts or fails over or the gateway dies, and every
job whose history has a line from the moment such a fault began until it ended (a job can fail,
and be queued again for its retry, between two reads of rq's registries). Every container records what it served, under which token
(fake-mcp, ``FAKE_MCP_RECORD_DIR``): the checker's ground truth.

After each fault the soak measures the time until the pool is whole again (every registered
container running and serving or leased, Docker and the registry agreeing, at least the minimum
size), from the moment the fault ends. At the end it prints and writes to ``--out``
(soak-results.json): jobs submitted / completed / failed by reason and by fault, lost jobs,
double grants and every other violation found by the history checker (tests/faults/checker.py),
leaked containers, convergence max and p50. The soak fails (exit status 1) unless

- every job completed, or failed and was hit by a recorded fault (none lost, none unexplained);
- at least 99 % of the jobs no fault hit completed;
- the pool was whole again within 10 s of every fault (a slower one is named);
- no double grant, no other history violation, no leaked container;
- the containers recorded uses (the checker's ground truth is not empty);
- no job was retried by rq unless a recorded fault hit it (``retried_unexplained``: a retry
  hides a failure);
- with ``--every-fault``, every fault kind ran.
"""

from tests.soak.verdict import verdict

__all__ = ["verdict"]
