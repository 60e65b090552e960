"""The lease store: the pool's state in Redis, changed only through the Lua scripts (lease/lua/).

One object for the sync callers, made of one part per caller: ``jobside.py`` (acquire, renew,
release, prepared), ``admin.py`` (the supervisor's writes), ``reads.py`` (snapshots and queues),
``stream.py`` (the event stream), over ``client.py`` (the scripts, the keys). Script replies map
to :class:`Status`, then to typed exceptions (``calls.py``).
"""

from __future__ import annotations

from cinnamon_pool.lease.admin import SupervisorSide
from cinnamon_pool.lease.jobside import NOT_READY_GRACE_S as NOT_READY_GRACE_S
from cinnamon_pool.lease.jobside import JobSide
from cinnamon_pool.lease.reads import PoolReads
from cinnamon_pool.lease.stream import EventStream
from cinnamon_pool.model import Grant as Grant
from cinnamon_pool.model import Holder as Holder
from cinnamon_pool.model import PoolSnapshot as PoolSnapshot


class LeaseStore(JobSide, SupervisorSide, PoolReads, EventStream):
    """The pool's lease store for one pool (and, on a supervisor, one Docker host)."""
