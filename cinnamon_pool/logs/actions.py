"""The log vocabulary: every action a daily log record can name, defined once.

The writers (``logs/events.py``, the supervisor's journal and actuator, the gateway), the
analyzer and the docs test import these; docs/operations.md lists each with what it means and
what to do. A record's action is one of these members, so a new one is added here first.
"""

from __future__ import annotations

import enum

from cinnamon_pool.model import ContainerState


class LogAction(enum.StrEnum):
    CONTAINER_STARTED = "CONTAINER_STARTED"
    ALLOCATED = "ALLOCATED"
    RELEASED = "RELEASED"
    CLEANUP_COMPLETED = "CLEANUP_COMPLETED"
    ERROR_OCCURRED = "ERROR_OCCURRED"
    MARKED_DRAINING = "MARKED_DRAINING"
    MARKED_RESTARTING = "MARKED_RESTARTING"
    MARKED_UNHEALTHY = "MARKED_UNHEALTHY"
    CONTAINER_RESTART = "CONTAINER_RESTART"
    CONTAINER_REPLACED = "CONTAINER_REPLACED"
    CONTAINER_REMOVED = "CONTAINER_REMOVED"
    ACCESS_DENIED = "ACCESS_DENIED"
    PREPARE_TIMEOUT = "PREPARE_TIMEOUT"
    LEASE_EXPIRED = "LEASE_EXPIRED"
    ORPHAN_REMOVED = "ORPHAN_REMOVED"
    POOL_EXPANDED = "POOL_EXPANDED"
    POOL_SHRUNK = "POOL_SHRUNK"
    LEADER_ELECTED = "LEADER_ELECTED"
    LEADER_STANDBY = "LEADER_STANDBY"

    @classmethod
    def marked(cls, state: ContainerState) -> LogAction:
        """The record of a state change the rules made (MARKED_DRAINING, ...)."""
        return cls(f"MARKED_{state.value.upper()}")
