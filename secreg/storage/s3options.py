"""`storage.s3` settings as a value (no client import here: config reads it without loading botocore)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class S3Options:
    """The reference registry's key names (distribution's `s3-aws` driver), plus `redirect`."""

    bucket: str
    region: str = "us-east-1"
    regionendpoint: str = ""  # a non-AWS S3 service (path-style addressing); empty: AWS for `region`
    rootdirectory: str = ""  # key prefix
    accesskey: str = ""  # empty: the standard AWS chain (AWS_* environment, ~/.aws, instance role)
    secretkey: str = field(default="", repr=False)
    secure: bool = True  # https to the object store
    v4auth: bool = True  # SigV4 signatures (false: legacy SigV2)
    chunksize: int = 10 * 1024 * 1024  # multipart part size for uploads (>= 5 MiB)
    multipartcopythresholdsize: int = 32 * 1024 * 1024  # server-side copies above this use UploadPartCopy
    multipartcopychunksize: int = 32 * 1024 * 1024
    redirect: bool = False  # blob GET answers 307 to a presigned URL
    redirectexpiry: int = 60  # seconds a presigned URL stays valid
