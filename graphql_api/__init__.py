"""The API layer: for now the ``stepsaga`` command line (GraphQL and the server come next)."""

from __future__ import annotations

__all__: list[str] = []
