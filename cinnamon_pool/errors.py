"""One exception root for everything cinnamon-pool raises on purpose.

Foreign errors (redis, docker, httpx) are translated at the adapter that met them, with
``raise ... from error`` so the cause stays attached.
"""

from __future__ import annotations


class CinnamonError(Exception):
    """Root of every error cinnamon-pool raises on purpose."""


class ConfigError(CinnamonError, ValueError):
    """A configuration key or value is wrong; ``key`` names it, ``value`` is what was given."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        self.key, self.value, self.reason = key, value, reason
        super().__init__(f"config {key}={value!r}: {reason}")


class InvalidIdentifier(CinnamonError, ValueError):
    """A name, id or test run id is not safe to put in a Redis key, a label or a log line."""

    def __init__(self, kind: str, value: object, reason: str) -> None:
        self.kind, self.value, self.reason = kind, value, reason
        shown = value if not isinstance(value, str) or len(value) <= 80 else value[:77] + "..."
        super().__init__(f"invalid {kind} {shown!r}: {reason}")


class StoreError(CinnamonError):
    """The pool's Redis refused a command (a read-only replica, a key of the wrong type), or did
    not answer: then :class:`StoreUnavailable`."""

    def __init__(self, where: str, detail: str) -> None:
        self.where, self.detail = where, detail
        super().__init__(self._say(where, detail))

    @staticmethod
    def _say(where: str, detail: str) -> str:
        return f"Redis at {where} refused a command: {detail}"


class StoreUnavailable(StoreError):
    """The pool's Redis does not answer (down, cut off, refusing the credentials)."""

    @staticmethod
    def _say(where: str, detail: str) -> str:
        return f"Redis at {where} does not answer: {detail}"


class LeaseError(CinnamonError):
    """A lease operation was refused; the pool's keys were left as they were."""


class PoolExhausted(LeaseError):
    """No container could be granted within the acquire timeout."""

    def __init__(self, pool: str, waited_s: float, counts: dict[str, int]) -> None:
        self.pool, self.waited_s, self.counts = pool, waited_s, dict(counts)
        shown = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        super().__init__(f"pool {pool!r} had no free container after {waited_s:.1f} s ({shown})")


class PoolNotReady(LeaseError):
    """The pool has no metadata in Redis: no supervisor has registered a container yet."""


class LeaseLost(LeaseError):
    """The lease is no longer ours: expired, reclaimed, container gone, or Redis lost its data."""

    def __init__(self, container: str, reason: str) -> None:
        self.container, self.reason = container, reason
        super().__init__(f"lease on {container} lost: {reason}")


class LeaseNotOwned(LeaseError):
    """The token presented is not the current holder's (forged, stale, or from another epoch)."""

    def __init__(self, container: str, reason: str) -> None:
        self.container, self.reason = container, reason
        super().__init__(f"lease on {container} not owned: {reason}")


class ReplicasMissing(LeaseError):
    """A grant was not acknowledged by ``redis.wait_replicas`` replicas in time; it was given back."""

    def __init__(self, pool: str, wanted: int, acknowledged: int, timeout_ms: int) -> None:
        self.pool, self.wanted, self.acknowledged = pool, wanted, acknowledged
        super().__init__(
            f"pool {pool!r}: a grant was acknowledged by {acknowledged} of the {wanted} replicas redis.wait_replicas asks for "
            f"within {timeout_ms} ms; is the replica up? (`redis-cli info replication`)"
        )


class NotLeader(LeaseError):
    """This supervisor is not (or no longer) the active one for its Docker host; nothing changed."""


class RuntimeUnavailable(CinnamonError):
    """The container runtime (Docker) cannot be reached or refused an operation."""


class ImageMissing(RuntimeUnavailable):
    """The configured image is not present and cannot be pulled."""

    def __init__(self, image: str, detail: str) -> None:
        self.image = image
        super().__init__(f"image {image!r} is not available: {detail}")


class ImageRejected(ImageMissing):
    """The image is present but is not the one ``container.image_id`` pins: for the pool, as good
    as missing (nothing is started from it)."""


class RefusedFunction(CinnamonError):
    """A job named a function outside ``[worker] allowed_functions``; it was neither imported nor run."""

    def __init__(self, func_name: str, allowed: tuple[str, ...]) -> None:
        super().__init__(f"{func_name!r} is not in a module of [worker] allowed_functions ({', '.join(allowed)})")
        self.func_name, self.allowed = func_name, allowed


class UntrustedEndpoint(CinnamonError):
    """A grant named an endpoint outside the trusted gateway URLs (``gateway.trusted_urls``): the
    lease token is not sent there (a record in Redis may have been forged)."""

    def __init__(self, endpoint: str, why: str) -> None:
        super().__init__(f"endpoint {endpoint!r} {why}")
        self.endpoint = endpoint


class SessionFailed(CinnamonError):
    """An MCP request of a session the gateway holds (prepared, keeper, a trace's) did not get a
    good answer."""


class BrowserSessionEnded(CinnamonError):
    """The job's MCP session ended under a call (the gateway or the container went away): the
    call fails at once, instead of waiting out its time-out."""

    def __init__(self, container: str, cause: str) -> None:
        super().__init__(f"the MCP session on {container} ended during the call: {cause}")
        self.container, self.cause = container, cause
