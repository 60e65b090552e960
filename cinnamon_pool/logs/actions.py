"""The log vocabulary: every action a daily log record can name, and every detail label, defined once.

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


class Detail(enum.StrEnum):
    """Every detail label a record carries (``  └─ <label>: <value>``), written and read by these
    names only. Memory After is the seed's own label, still read from old files."""

    TEST_RUN = "Test Run"
    WAIT_TIME = "Wait Time"
    OUTCOME = "Outcome"
    DURATION = "Duration"
    TOOL_CALLS = "Tool Calls"
    TOOL_LATENCY_P50 = "Tool Latency p50"
    TOOL_LATENCY_MAX = "Tool Latency Max"
    PEAK_MEMORY = "Peak Memory"
    CONSOLE_ERRORS = "Console Errors"
    TRACE = "Trace"
    ARTIFACTS = "Artifacts"
    ERROR = "Error"
    ERROR_TYPE = "Error Type"
    CONTEXT = "Context"
    REASON = "Reason"
    ACTION = "Action"
    STATUS = "Status"
    CLIENT = "Client"
    DETAIL = "Detail"
    HOST = "Host"
    SUPERVISOR = "Supervisor"
    JOB = "Job"
    WORKER = "Worker"
    FROM = "From"
    TO = "To"
    RESULT = "Result"
    CLEANUP_DURATION = "Cleanup Duration"
    MEMORY_AFTER_CLEANUP = "Memory After Cleanup"
    MEMORY_AFTER = "Memory After"
    MEMORY_USAGE = "Memory Usage"
    CONSECUTIVE_ERRORS = "Consecutive Errors"
    ERROR_COUNT = "Error Count"
    UPTIME = "Uptime"
    STARTUP_TIME = "Startup Time"
    CONTAINER_ID = "Container ID"
    ENDPOINT = "Endpoint"
    OLD_CONTAINER = "Old Container"
    CONTAINER = "Container"
    HELD_FOR = "Held For"
    AVAILABLE_CONTAINERS = "Available Containers"
    KEY = "Key"
    FIELD = "Field"
    VALUE = "Value"


Details = list[tuple[Detail, str]]  # what a writer hands a record: its labels from the vocabulary
