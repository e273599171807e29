"""Each package's ``__all__`` lists exactly its public names."""

from __future__ import annotations

import importlib
import types

import pytest

PACKAGES = ["engine", "engine.store", "workers", "workers.actions", "workers.actions.backups",
            "workers.actions.orders", "workers.actions.messaging", "workers.actions.files",
            "workers.actions.shared", "workers.actions.users", "graphql_api"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        attr for attr, value in vars(module).items()
        if not attr.startswith("_") and not isinstance(value, types.ModuleType)
        and attr != "annotations"
    }
    assert set(module.__all__) == public
    assert len(module.__all__) == len(set(module.__all__))
