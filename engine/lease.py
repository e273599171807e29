"""Who runs a work when several processes share a store.

A worker node claims a work by writing a lease row: its node id (``owner``), the
named worker that runs it, a token that grows at every claim, and an expiry that
the node pushes forward by heartbeat. A node that dies stops renewing, its leases
expire, and another node claims the works and goes on from their events. The
claiming itself lives in :mod:`workers.leases`; the engine only takes a lease with
a work's creation and drops it with the work's end, in the same commits.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["UNTIL_WOKEN", "Lease"]

# when a work parked until something wakes it (paused, or waiting for a signal) is due:
# never by itself; a command sent to it (engine.store.inbox) makes it claimable
UNTIL_WOKEN = float(2**53)


@dataclass(frozen=True, slots=True)
class Lease:
    """Who runs a work: a worker node (``owner``), its named ``worker``, and for how long
    a lease lasts unless renewed (``ttl``, seconds)."""

    owner: str
    worker: str
    ttl: float
    # a work whose next step is at least this many seconds away (a sleep, a retry's
    # backoff) is parked: its driver stops (Runtime.on_driver_end tells when it is due;
    # a worker node hands the lease back until then), so it takes no worker slot
    # meanwhile; so is a work paused this long, and a work waiting for nothing but a
    # signal (until UNTIL_WOKEN: a command or a signal through the store's inbox wakes
    # it). None: never.
    park_after: float | None = None

    def __post_init__(self) -> None:
        if not self.owner or not self.worker:
            raise ValueError("a lease needs an owner (the node) and a worker")
        if not self.ttl > 0:
            raise ValueError(f"a lease's ttl must be a positive number of seconds, "
                             f"got {self.ttl!r}")
        if self.park_after is not None and not self.park_after >= 0:
            raise ValueError(f"a lease's park_after must be >= 0 seconds or None, "
                             f"got {self.park_after!r}")
