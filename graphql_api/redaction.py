"""Secrets in the API's answers: the fields a schema marks secret are stored sealed
(engine.secrets), and every JSON value the API answers with (a work's input and output,
an event's payload, a stage's state, a subscription's events, logs) goes through
:func:`shown`: a client that may read secrets (administrators, and principals a policy
gives the ``secrets`` action) gets them opened with the server's key; any other gets
``"[secret]"`` in their place. Python in this process sees them as stored (sealed).

The choice is made per request (a WebSocket: per connection) in a context variable set
with its context (graphql_api.server), and applied where JSON is serialised: the JSON
scalar of the schema, so no field can forget it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from strawberry.scalars import JSON
from strawberry.schema.types.scalar import DEFAULT_SCALAR_REGISTRY

from engine.secrets import Secrets, holds_secrets, redact

__all__ = ["JSON_SHOWN", "choose", "shown"]

_VIEW: ContextVar[Callable[[Any], Any] | None] = ContextVar("stepsaga_secrets_view",
                                                           default=None)


def shown(value: Any) -> Any:
    """A JSON value as this request's client may see it."""
    view = _VIEW.get()
    if view is None or not holds_secrets(value):
        return value
    return view(value)


def _opened(secrets: Secrets) -> Callable[[Any], Any]:
    def view(value: Any) -> Any:
        try:
            return secrets.open(value)
        except ValueError:  # another key's, or damaged: not this server's to show
            return redact(value)
    return view


def choose(principal: Any, may_read: bool, secrets: Secrets | None) -> None:
    """How this request (and the tasks it starts) shows secrets."""
    if principal is None:
        _VIEW.set(None)
    elif may_read and secrets is not None:
        _VIEW.set(_opened(secrets))
    else:
        _VIEW.set(redact)


# the schema's JSON scalar, serialised through shown (strawberry's own, otherwise)
JSON_SHOWN = dataclasses.replace(DEFAULT_SCALAR_REGISTRY[JSON], serialize=shown)
