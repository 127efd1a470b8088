"""`storage.s3` settings as a value: defined in `secreg.config` with the other settings (config imports nothing
of storage/); the S3 driver imports it from here."""

from __future__ import annotations

from secreg.config import S3Options

__all__ = ["S3Options"]
