"""Checking a store URL before anything connects to it.

The mistakes people make with a store URL surface late and obscurely otherwise: a
synchronous driver fails deep inside SQLAlchemy's asyncio layer, and a SQLite file
in a missing or read-only directory gives ``unable to open database file``, which
names neither the file nor the directory. :func:`check_store_url` turns each into a
``ValueError`` that names the URL, what is wrong and what to use instead::

    >>> check_store_url("sqlite:///app.sqlite")
    Traceback (most recent call last):
    ...
    ValueError: store URL 'sqlite:///app.sqlite': the store needs the aiosqlite driver, \
not the default synchronous one; use 'sqlite+aiosqlite:///app.sqlite'
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError

__all__ = ["check_store_url"]

# the async driver the store runs on, per database
_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
_EXAMPLES = "sqlite+aiosqlite:///stepsaga.sqlite or postgresql+asyncpg://user@host/db"


def check_store_url(url: str) -> sa.URL:
    """``url`` parsed, once it names a database the store can run on: SQLite through
    aiosqlite in a file whose directory exists and is writable, or PostgreSQL through
    asyncpg. Otherwise a ``ValueError`` naming the URL and what is expected."""
    if not isinstance(url, str):
        raise TypeError(f"a store URL is a string, got {type(url).__name__}")
    try:
        parsed = sa.make_url(url)
    except ArgumentError:
        raise ValueError(f"store URL {url!r} is not a database URL; expected e.g. "
                         f"{_EXAMPLES}") from None
    shown = parsed.render_as_string(hide_password=True)
    backend, _, driver = parsed.drivername.partition("+")
    want = _DRIVERS.get(backend)
    if want is None:
        raise ValueError(f"store URL {shown!r}: the store runs on SQLite or PostgreSQL, not "
                         f"{backend!r}; expected e.g. {_EXAMPLES}")
    if driver != want:
        fixed = parsed.set(drivername=f"{backend}+{want}").render_as_string(hide_password=True)
        which = f"{driver!r}" if driver else "the default synchronous one"
        raise ValueError(f"store URL {shown!r}: the store needs the {want} driver, not "
                         f"{which}; use {fixed!r}")
    if backend == "sqlite":
        _check_sqlite_file(parsed, shown)
    return parsed


def _check_sqlite_file(url: sa.URL, shown: str) -> None:
    database = url.database
    if database in (None, "", ":memory:") or url.query.get("mode") == "memory":
        return  # refused by the store itself, with its own reason (it needs a file)
    if url.query.get("uri") == "true" or database.startswith("file:"):
        return  # an SQLite URI filename: its path is SQLite's to interpret
    path = Path(database)
    directory = path.parent
    if path.is_dir():
        raise ValueError(f"store URL {shown!r}: {str(path)!r} is a directory; expected the "
                         "path of a database file in it")
    if not directory.exists():
        raise ValueError(f"store URL {shown!r}: directory {str(directory)!r} does not exist; "
                         "create it or put the database file in an existing directory")
    if not directory.is_dir():
        raise ValueError(f"store URL {shown!r}: {str(directory)!r} is not a directory; "
                         "expected the directory of the database file")
    # SQLite creates the file, and in WAL mode its -wal and -shm files, beside it
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"store URL {shown!r}: directory {str(directory)!r} is not writable; "
                         "the store creates the database file and its -wal and -shm files "
                         "there, so choose a directory you may write to")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise ValueError(f"store URL {shown!r}: database file {str(path)!r} is not readable "
                         "and writable; the store needs to read and write it")
