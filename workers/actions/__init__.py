"""The product's own sagas."""

from __future__ import annotations

from .demo import DEMO_ORDER, demo_saga

__all__ = ["DEMO_ORDER", "demo_saga"]
