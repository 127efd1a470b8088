"""The registry model's errors: what went wrong, in the model's terms, with no HTTP status or OCI code.

    ModelError                      base: `message` (None: the mapping's default text) and `detail`
      NameUnknown(name)             no such repository
      BlobUnknown(digest)           not a blob of this repository (or its bytes are gone)
      UploadUnknown(upload_id)      no such upload session
      RangeMismatch(current_size)   a chunk that does not continue the session where it stands
      SizeMismatch                  a body shorter or longer than it said it would be
      UploadInterrupted             the body ended before it was complete (the client went away)
      DigestMismatch(expected, actual)  content that does not hash to the digest it was sent with
      ManifestUnknown(reference)    no such tag or manifest in this repository
      ManifestInvalid               a document that is not a manifest we store
      ManifestBlobsUnknown(digests) a manifest referencing blobs or manifests the repository lacks
      Unsupported(reason)           an operation this registry refuses (read-only, deletes off, ...)
      UpstreamUnavailable(upstream) the pull-through cache's upstream cannot answer and nothing is cached

`secreg.api.errors` maps each to the OCI code, status and headers of the distribution spec; a second model
implementation (the pull-through cache) raises the same errors, so the mapping serves both.
"""

from __future__ import annotations

from typing import Any

from secreg.digest import Digest

__all__ = [
    "BlobInterrupted",
    "BlobUnknown",
    "DigestMismatch",
    "ManifestBlobsUnknown",
    "ManifestInvalid",
    "ManifestUnknown",
    "ModelError",
    "NameUnknown",
    "RangeMismatch",
    "SizeMismatch",
    "Unsupported",
    "UpstreamUnavailable",
    "UploadInterrupted",
    "UploadUnknown",
]


class ModelError(Exception):
    """Base of the registry model's errors. `message` None means: the standard text for this kind of error."""

    def __init__(self, message: str | None = None, detail: Any = None) -> None:
        super().__init__(message or type(self).__name__)
        self.message = message
        self.detail = detail


class NameUnknown(ModelError):
    def __init__(self, name: str) -> None:
        super().__init__(None, {"name": name})
        self.name = name


class BlobUnknown(ModelError):
    def __init__(self, digest: Digest | str) -> None:
        super().__init__(None, {"digest": str(digest)})
        self.digest = str(digest)


class BlobInterrupted(ModelError):
    """A blob's bytes stopped short after the answer had begun (the pull-through cache's upstream broke off, or
    sent bytes that failed their digest). Whoever raises it has logged why; all a server can do is cut the
    connection, so that the client never takes a part for the whole blob."""


class UploadUnknown(ModelError):
    def __init__(self, upload_id: str) -> None:
        super().__init__(None, {"uuid": upload_id[:64]})
        self.upload_id = upload_id[:64]


class RangeMismatch(ModelError):
    """The session holds `current_size` bytes; the next chunk must start there."""

    def __init__(self, current_size: int, message: str) -> None:
        super().__init__(message)
        self.current_size = current_size


class SizeMismatch(ModelError):
    pass


class UploadInterrupted(ModelError):
    pass


class DigestMismatch(ModelError):
    def __init__(self, expected: Digest, actual: Digest, message: str | None = None) -> None:
        super().__init__(message, {"expected": str(expected), "actual": str(actual)})
        self.expected = expected
        self.actual = actual


class ManifestUnknown(ModelError):
    def __init__(self, reference: object, message: str | None = None, detail: Any = None) -> None:
        super().__init__(message, detail if detail is not None else {"reference": str(reference)[:200]})
        self.reference = str(reference)[:200]


class ManifestInvalid(ModelError):
    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message, detail)


class ManifestBlobsUnknown(ModelError):
    def __init__(self, digests: list[str]) -> None:
        super().__init__(
            f"manifest references {len(digests)} unknown blob(s) or manifest(s); push them first",
            {"digests": digests[:20]},
        )
        self.digests = tuple(digests)


class Unsupported(ModelError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpstreamUnavailable(ModelError):
    """The upstream registry a proxied name belongs to cannot answer (unreachable, 5xx, refusing the cache's
    credentials), and the content asked for was never cached."""

    def __init__(self, upstream: str, message: str) -> None:
        super().__init__(message, {"upstream": upstream})
        self.upstream = upstream
