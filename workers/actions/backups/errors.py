"""The backups pack's errors.

::

    BackupError                      any failure of a backup, a restore or a check
    ├── BackupConfigError (ValueError)   a setting or an input that cannot be used
    ├── SourceError                  a dump or a load failed (the tool's message kept)
    ├── TargetError                  the target refused a read or a write
    ├── TargetExistsError            a restore into something that exists, not asked for
    └── IntegrityError               a manifest or an object is not what was written
        └── WrongKeyError            the data does not decrypt with the key given

Whether a failure is worth retrying is the error's ``retryable`` field (the engine
reads it): a bad setting, a corrupted object or a wrong key never gets better.
"""

from __future__ import annotations

from engine import StageFailure

__all__ = ["BackupConfigError", "BackupError", "IntegrityError", "SourceError",
           "TargetError", "TargetExistsError", "WrongKeyError"]


class BackupError(StageFailure):
    """Any failure of the backups pack."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message, retryable=retryable)


class BackupConfigError(BackupError, ValueError):
    """A setting or a work's input that cannot be used; the message names the field."""


class SourceError(BackupError):
    """Dumping a source or loading into it failed."""


class TargetError(BackupError):
    """A target could not be read or written."""


class TargetExistsError(BackupError):
    """A restore would overwrite something that exists, and ``replace`` was not asked."""


class IntegrityError(BackupError):
    """A manifest or a backup object is not what was written (altered or truncated)."""


class WrongKeyError(IntegrityError):
    """The object does not decrypt with the key given."""
