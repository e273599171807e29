"""The users pack's errors.

::

    UsersError                          any failure of a user, a session or a token
    ├── UsersConfigError (ValueError)   a setting of [users] that cannot be used
    ├── UserInputError (ValueError)     a field given wrongly (a malformed email or
    │                                   phone, a password too short, an email taken);
    │                                   ``field`` names it
    ├── TokenError (ValueError)         a confirmation or reset token, or a phone code,
    │                                   refused: unknown, used already, expired
    └── SignInError                     a login refused: ``reason`` is ``refused`` (the
                                        email or the password is wrong: one answer for
                                        both), ``rate_limited`` (``retry_after`` says when
                                        to try again) or ``not_active`` (pending or
                                        disabled)

Whether a failure is worth retrying is the error's ``retryable`` field (the engine
reads it): none of these gets better by itself, so none is retried.
"""

from __future__ import annotations

from engine import StageFailure

__all__ = ["SignInError", "TokenError", "UserInputError", "UsersConfigError", "UsersError"]


class UsersError(StageFailure):
    """Any failure of the users pack."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message, retryable=retryable)


class UsersConfigError(UsersError, ValueError):
    """A setting of the ``[users]`` section that cannot be used; the message names it."""


class UserInputError(UsersError, ValueError):
    """A field that cannot be taken (``field`` names it); nothing stored was changed."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class TokenError(UsersError, ValueError):
    """A token or code refused; ``reason`` is unknown, used or expired."""

    def __init__(self, message: str, *, reason: str = "unknown") -> None:
        super().__init__(message)
        self.reason = reason


class SignInError(UsersError):
    """A login refused (see the module docstring for ``reason``)."""

    def __init__(self, message: str, *, reason: str = "refused",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after
