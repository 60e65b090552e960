"""Every retry and back-off policy of the pool, in one place, as tenacity wait strategies.

Some retries block (an acquire while Redis does not answer, the Docker event stream): tenacity's
``Retrying`` runs them. Others are schedules kept as a next-try time while the loop goes on (a
slot that cannot start, a failed preparation, failing supervisor ticks): :func:`after` asks the
same strategy how long to wait after the n-th failure in a row.
"""

from __future__ import annotations

from tenacity import RetryCallState, wait_exponential
from tenacity.wait import wait_base

REDIS_UNREACHABLE = wait_exponential(multiplier=0.1, min=0.1, max=2.0)  # an acquire while Redis does not answer: 0.1 s .. 2 s
DOCKER_EVENTS = wait_exponential(multiplier=0.5, min=0.5, max=10.0)  # reconnecting to Docker's event stream: 0.5 s .. 10 s
TICK_FAILED = wait_exponential(multiplier=1.0, min=1.0, max=30.0)  # supervisor ticks that fail (Docker or Redis down): 1 s .. 30 s
SLOT_FAILED = wait_exponential(multiplier=1.0, min=1.0, max=30.0)  # one slot whose container cannot start: 1 s .. 30 s
PREPARE_FAILED = wait_exponential(multiplier=1.0, min=1.0, max=30.0)  # a container's next session could not be prepared: 1 s .. 30 s
MAX_WAIT_S = 30.0


def after(policy: wait_base, failures: int) -> float:
    """How long ``policy`` waits after the ``failures``-th failure in a row (1, 2, ...)."""
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = max(1, failures)
    return float(policy(state))
