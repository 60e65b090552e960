"""A daemon thread that renews a lease every TTL/3 in the process that runs the job.

rq runs a job in a forked work horse, and its parent may SIGKILL that horse; the heartbeat
therefore lives in the horse, so it dies with the job and the lease expires by itself.
"""

from __future__ import annotations

import threading

from cinnamon_pool.errors import LeaseError, StoreError
from cinnamon_pool.lease.handle import ContainerLease
from cinnamon_pool.lease.store import LeaseStore


class Heartbeat:
    def __init__(self, store: LeaseStore, lease: ContainerLease, interval_s: float | None = None) -> None:
        self.store = store
        self.lease = lease
        self.interval_s = interval_s if interval_s is not None else store.lease_ttl_s / 3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cinnamon-heartbeat-{lease.name}", daemon=True)
        self.renewals = 0

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing. Not joined: the thread ends on its own, and a renewal that races the
        release is refused by the script (the token is no longer current) and changes nothing."""
        self._stop.set()

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            sent_at = self.lease.clock.monotonic()
            try:
                self.store.renew(self.lease.name, self.lease.token)
            except LeaseError as error:
                self.lease.mark_lost(str(error))
                return
            except StoreError:
                continue  # transient: the self-fence deadline decides when this stops being safe
            # Count the renewal from when it was sent: the server extended the lease no earlier.
            self.lease.mark_renewed(sent_at)
            self.renewals += 1
