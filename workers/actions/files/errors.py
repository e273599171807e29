"""The files pack's errors.

::

    FilesError                         any failure of a file operation
    ├── FilesConfigError (ValueError)  a setting or an input that cannot be used (the
    │                                  message names the field: files.buckets.x.sign_key,
    │                                  key, to_bucket...)
    ├── MissingFileError (LookupError) no object has that key in that bucket
    ├── ExistingFileError              the key holds an object and replace was not asked
    ├── RepositoryError                the repository refused a read or a write
    └── TamperedError                  an object is not what was written: its signature,
        │                              its authentication or its size does not check
        └── WrongKeyError              it does not decrypt with the bucket's key

Whether a failure is worth retrying is the error's ``retryable`` field (the engine
reads it): only a repository's transient refusal is.
"""

from __future__ import annotations

from engine import StageFailure

__all__ = ["ExistingFileError", "FilesConfigError", "FilesError", "MissingFileError",
           "RepositoryError", "TamperedError", "WrongKeyError"]


class FilesError(StageFailure):
    """Any failure of the files pack."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message, retryable=retryable)


class FilesConfigError(FilesError, ValueError):
    """A setting or a work's input that cannot be used; the message names the field."""


class MissingFileError(FilesError, LookupError):
    """No object has the key asked for."""


class ExistingFileError(FilesError):
    """The key holds an object and ``replace`` was not asked for."""


class RepositoryError(FilesError):
    """A repository could not be read or written."""


class TamperedError(FilesError):
    """An object is not what was written (altered, truncated or swapped); it is never
    returned."""


class WrongKeyError(TamperedError):
    """The object does not decrypt with the bucket's key."""
