"""``rq worker -w cinnamon_pool.worker.Worker``: rq's forking worker, with cinnamon-pool's job side
(the official MCP client, httpx, the lease store) imported once in the worker process.

rq forks a work horse per job and imports the job's module in the horse, so without this each
job pays those imports again (about 1.1 s on the 2-core machine of the benchmarks). Imported
here, before the fork, every horse starts with them loaded. Nothing else changes: it *is*
rq's worker.
"""

from __future__ import annotations

from rq.worker import Worker as RqWorker

import cinnamon_pool.browser
import cinnamon_pool.job

PRELOADED = (cinnamon_pool.browser.__name__, cinnamon_pool.job.__name__)


class Worker(RqWorker):
    """rq's default (forking) worker; importing this module is what preloads the job side."""
