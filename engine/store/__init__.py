"""The durable event store: SQLite (embedded default) or PostgreSQL."""

from __future__ import annotations

from .codec import CorruptEventError
from .sql import ConflictError, SqlStore, StoreConfig

__all__ = ["ConflictError", "CorruptEventError", "SqlStore", "StoreConfig"]
