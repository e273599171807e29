"""The packs' shared fixtures (tests/workers/packs.py): one S3 server per session."""

from __future__ import annotations

from .packs import s3_bucket, s3_endpoint

__all__ = ["s3_bucket", "s3_endpoint"]
