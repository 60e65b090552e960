"""``rq worker -w cinnamon_pool.worker.Worker``: rq's forking worker, with cinnamon-pool's job side
(the official MCP client, httpx, the lease store) imported once in the worker process, and two
guards on what a job read from Redis can make it run.

rq forks a work horse per job and imports the job's module in the horse, so without this each
job pays those imports again (about 1.1 s on the 2-core machine of the benchmarks). Imported
here, before the fork, every horse starts with them loaded.

rq imports whatever function a job names (``func_name``), whatever the serializer: write access
to Redis is code execution in every worker. With ``[worker] allowed_functions`` this worker runs
only the functions of those modules; any other job fails, unrun and unimported, with
:class:`RefusedFunction` in its exception info. It refuses to start with rq's pickle serializer
(``-S json`` or ``[worker] allow_pickle = true``). Everything else is rq's worker as it is.
"""

from __future__ import annotations

import pickle
from typing import Any

from rq.job import Job
from rq.queue import Queue
from rq.worker import Worker as RqWorker
from rq.worker import WorkerStatus

import cinnamon_pool.browser
import cinnamon_pool.job
from cinnamon_pool.config import PoolConfig, WorkerSettings
from cinnamon_pool.errors import RefusedFunction

PRELOADED = (cinnamon_pool.browser.__name__, cinnamon_pool.job.__name__)


class Worker(RqWorker):
    """rq's default (forking) worker; importing this module is what preloads the job side."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard: WorkerSettings = PoolConfig.from_environment().worker
        if self.serializer.loads is pickle.loads and not self.guard.allow_pickle:
            raise SystemExit(
                "cinnamon_pool.worker.Worker does not run pickled jobs: whoever can write to the Redis "
                "could run code here. Start it with -S json (and enqueue with JSONSerializer), "
                "or set [worker] allow_pickle = true"
            )
        if not self.guard.allowed_functions:
            self.log.warning("any function a job names in Redis can run here: list your job modules in [worker] allowed_functions")

    def unsubscribe(self) -> None:
        """rq's, in the order that cannot hang: the listener thread's flag is cleared *before*
        the UNSUBSCRIBE whose reply wakes it. In rq's order (unsubscribe, then stop) a listener
        that reads the reply first goes back to a 60 s wait, and redis-py 8's ``stop()`` waits
        for it: a worker told to stop took a minute to exit (seen in make test)."""
        thread = self.pubsub_thread
        if thread is None:
            return
        self.log.info("Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
        try:
            thread.stop(timeout=0)  # redis-py 8: clear the flag, do not wait yet
        except TypeError:
            thread.stop()  # earlier redis-py: clears the flag and never waits
        self.pubsub.unsubscribe()
        thread.join(timeout=5)
        self.pubsub.close()

    def execute_job(self, job: Job, queue: Queue) -> None:
        name = job.func_name or ""  # None for a job whose data does not name a function
        if self.guard.allows(name):
            super().execute_job(job, queue)
            return
        refused = RefusedFunction(name, self.guard.allowed_functions)
        self.log.error("job %s refused: %s", job.id, refused)
        self.handle_job_failure(job, queue, exc_string=f"{type(refused).__name__}: {refused}")
        self.set_state(WorkerStatus.IDLE)
