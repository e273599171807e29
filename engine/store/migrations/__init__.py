"""Alembic migrations of the store's schema; applied by :func:`engine.store.migrate`."""
