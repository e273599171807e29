"""Shared test setup: async tests run on anyio's asyncio backend; a real PostgreSQL.

``postgres_url`` gives a test a fresh, empty database in one PostgreSQL cluster
started for the whole session (only when some test asks for it). Without the
PostgreSQL binaries those tests fail, never skip: CI installs them.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from .pg import PostgresCluster, PostgresUnavailable


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(collector: pytest.Module | pytest.Class, name: str,
                              obj: object) -> object:
    # Marked as the function is collected, before anyio's own hook looks: async tests
    # that are only marked later (below) are rebuilt by anyio at the end of collection
    # with anyio_backend as their only parameter, which drops every other parameter
    # (pytest.mark.parametrize, parametrized fixtures).
    if collector.istestfunction(obj, name) and inspect.iscoroutinefunction(obj):
        pytest.mark.anyio(obj)
    return (yield)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and inspect.iscoroutinefunction(function):
            item.add_marker(pytest.mark.anyio)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.start()
    except PostgresUnavailable as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:  # fail, never skip: CI installs PostgreSQL (.ci/run)
        pytest.fail(f"these tests need a real PostgreSQL: {missing}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A SQLAlchemy URL of a new, empty database for this test alone."""
    url = postgres_cluster.create_database()
    yield url
    # dropped, not left for the shutdown checkpoint to write out (seconds per dozen)
    postgres_cluster.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store on a SQLite file, then on a real PostgreSQL: tests using it run on both."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/store.sqlite"
    url: str = request.getfixturevalue("postgres_url")
    return url
