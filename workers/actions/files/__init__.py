"""File storage run as sagas: buckets of files on a directory or an S3-compatible
repository, with names and content optionally encrypted and content signed (checked on
every read), upload, download, delete, list, copy and move each a saga, a change feed,
and the asset manager's HTTP routes beside ``/graphql``.

See :mod:`.app` for loading it, :mod:`.config` for its ``[files]`` section,
:mod:`.sagas` for the sagas, :mod:`.changes` for the feed and :mod:`.api` for the
routes and GraphQL fields.
"""

from __future__ import annotations

from .app import app, files_app
from .buckets import Bucket, open_bucket
from .changes import CHANGES, Change, changes
from .config import BucketSpec, FilesConfig, KeySpec, parse
from .errors import (
    ExistingFileError,
    FilesConfigError,
    FilesError,
    MissingFileError,
    RepositoryError,
    TamperedError,
    WrongKeyError,
)
from .names import check_key
from .sagas import OPS, file_sagas
from .staging import discard, stage

__all__ = ["CHANGES", "OPS", "Bucket", "BucketSpec", "Change", "ExistingFileError",
           "FilesConfig", "FilesConfigError", "FilesError", "KeySpec", "MissingFileError",
           "RepositoryError", "TamperedError", "WrongKeyError", "app", "changes",
           "check_key", "discard", "file_sagas", "files_app", "open_bucket", "parse",
           "stage"]
