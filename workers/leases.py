"""The lease claims worker nodes use; they live in the store, :mod:`engine.store.leases`,
beside the lease rows appends write (a plain Runtime claims through them too)."""

from __future__ import annotations

from engine.store.leases import (
    CHANNEL,
    Claimed,
    HeldBack,
    Runs,
    check_saga_limits,
    claim,
    drop,
    hold_back_foreign,
    leave,
    next_due,
    notify,
    release,
    renew,
    renew_mail,
)

__all__ = ["CHANNEL", "Claimed", "HeldBack", "Runs", "check_saga_limits", "claim", "drop",
           "hold_back_foreign", "leave", "next_due", "notify", "release", "renew", "renew_mail"]
