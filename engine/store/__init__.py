"""The durable event store: SQLite (embedded default) or PostgreSQL."""

from __future__ import annotations

from .codec import CorruptEventError
from .sql import ConflictError, LeaseLostError, SqlStore, StoreConfig, StoreError

__all__ = ["ConflictError", "CorruptEventError", "LeaseLostError", "SqlStore", "StoreConfig",
           "StoreError"]
