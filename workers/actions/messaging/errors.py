"""The messaging pack's errors.

::

    MessagingError                     any failure of the messaging pack
    ├── MessagingConfigError (ValueError)  a setting of [messaging] that cannot be used
    ├── MessageInputError (ValueError)     a message that cannot be sent as asked: an
    │                                  unknown channel or template, a malformed address,
    │                                  a template naming a variable the context lacks
    ├── ChannelError (ValueError)      a channel operation refused (unknown, exists,
    │                                  deleted, a sender of another kind)
    └── SendError                      a sender (or every sender of a channel) failed

Whether a failure is worth retrying is the error's ``retryable`` field (the engine
reads it): a refused connection or a provider's 5xx or 429 may get better, a
malformed address or a provider's 400 never does.
"""

from __future__ import annotations

from engine import StageFailure

__all__ = ["ChannelError", "MessageInputError", "MessagingConfigError", "MessagingError",
           "SendError"]


class MessagingError(StageFailure):
    """Any failure of the messaging pack."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message, retryable=retryable)


class MessagingConfigError(MessagingError, ValueError):
    """A setting of ``[messaging]`` that cannot be used; the message names the key."""


class MessageInputError(MessagingError, ValueError):
    """A message's input that cannot be sent; the message names the field."""


class ChannelError(MessagingError, ValueError):
    """A channel operation refused; the message names the channel and why. ``kind``
    says which (``not_found``, ``conflict``, ``wrong_state`` or ``invalid_input``, as
    the API's typed errors) and ``field`` the argument at fault."""

    def __init__(self, message: str, *, kind: str = "invalid_input",
                 field: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.field = field


class SendError(MessagingError):
    """A sender failed to hand a message to its provider (the provider's answer kept)."""
