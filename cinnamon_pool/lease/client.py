"""The sync lease client's common part: one Redis client, the pool's keys and the lease scripts
registered on it, run with the pool's keys (and, for the supervisor's, its leader id)."""

from __future__ import annotations

from typing import Any

import redis
from redis.exceptions import NoScriptError

from cinnamon_pool.clock import SYSTEM_CLOCK, Clock
from cinnamon_pool.errors import NotLeader
from cinnamon_pool.keys import PoolKeys
from cinnamon_pool.lease.calls import text
from cinnamon_pool.lease.scripts import Op, Own, Status, own, source


class ScriptClient:
    def __init__(
        self,
        client: redis.Redis,
        pool: str,
        *,
        lease_ttl_s: float = 30.0,
        max_lease_s: float = 1800.0,
        error_threshold: int = 3,
        waiter_ttl_s: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        host: str = "-",
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
    ) -> None:
        self.redis = client
        self.wait_replicas, self.wait_timeout_ms = wait_replicas, wait_timeout_ms
        self.pool = pool
        self.keys = PoolKeys(pool)
        self.lease_ttl_s = lease_ttl_s
        self.max_lease_s = max_lease_s
        self.error_threshold = error_threshold
        self.waiter_ttl_s = waiter_ttl_s
        self.clock = clock
        self.host = host
        self.leader_id = ""  # set by an elected supervisor: its writes are then fenced
        self._scripts = {op: client.register_script(source(op)) for op in Op}
        self._compare_and_delete = client.register_script(own(Own.COMPARE_AND_DELETE))
        self._keys = self.keys.script_keys(host)

    def _run(self, op: Op, *args: Any) -> list[Any]:
        """EVALSHA straight through ``execute_command``: redis-py's ``Script.__call__`` costs 11 µs
        more per call (a tenth of a whole call here), for pipeline cases the store never has. A
        server whose script cache was flushed gets the script again, as ``Script`` would do."""
        script = self._scripts[op]
        try:
            reply = self.redis.execute_command("EVALSHA", script.sha, len(self._keys), *self._keys, *args)
        except NoScriptError:
            script.sha = self.redis.script_load(script.script)
            reply = self.redis.execute_command("EVALSHA", script.sha, len(self._keys), *self._keys, *args)
        return [text(item) for item in reply] if isinstance(reply, list) else [reply]

    def _run_as_leader(self, op: Op, *args: Any) -> list[Any]:
        """A supervisor script: its last ARGV is the caller's leader id, checked by the script."""
        reply = self._run(op, *args, self.leader_id)
        if reply and reply[0] == Status.NOT_LEADER:
            raise NotLeader(f"supervisor {self.leader_id!r} is no longer the leader for host {self.host!r}: {op.value} refused")
        return reply
