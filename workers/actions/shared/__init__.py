"""What the domain packs share: object storage on a directory or an S3-compatible
store (:mod:`.storage`), AES-256-GCM in authenticated segments (:mod:`.aead`) and
the checks of their config sections (:mod:`.checks`)."""

from __future__ import annotations

from .aead import SEGMENT, AesDecrypt, AesEncrypt
from .checks import Checks, decode_key
from .storage import CHUNK, MIN_PART, Storage, StorageSpec, Writer, open_storage, s3_client

__all__ = ["CHUNK", "MIN_PART", "SEGMENT", "AesDecrypt", "AesEncrypt", "Checks", "Storage",
           "StorageSpec", "Writer", "decode_key", "open_storage", "s3_client"]
