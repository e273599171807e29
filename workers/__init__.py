"""Workers: the pool, scheduling, and the product's own sagas in :mod:`workers.actions`."""

from __future__ import annotations

__all__: list[str] = []
