"""The registry model's errors as the distribution spec answers them: one table (model error -> OCI code,
plus the headers some codes carry). `secreg.httperrors.error_response` renders the result.

A new model error gets its row here; `test_every_model_error_is_mapped` fails until it has one.
"""

from __future__ import annotations

from collections.abc import Callable

from secreg.api.headers import upload_range
from secreg.errors import ErrorCode, RegistryError
from secreg.registry import errors as model

__all__ = ["MODEL_ERRORS", "oci_error"]


def _range(error: model.ModelError) -> dict[str, str]:
    assert isinstance(error, model.RangeMismatch)
    return {"Range": upload_range(error.current_size)}


# Model error -> (OCI code, headers the answer carries).
MODEL_ERRORS: dict[type[model.ModelError], tuple[ErrorCode, Callable[[model.ModelError], dict[str, str]] | None]] = {
    model.NameUnknown: (ErrorCode.NAME_UNKNOWN, None),
    model.BlobUnknown: (ErrorCode.BLOB_UNKNOWN, None),
    model.UploadUnknown: (ErrorCode.BLOB_UPLOAD_UNKNOWN, None),
    model.RangeMismatch: (ErrorCode.RANGE_INVALID, _range),
    model.SizeMismatch: (ErrorCode.SIZE_INVALID, None),
    model.UploadInterrupted: (ErrorCode.BLOB_UPLOAD_INVALID, None),
    model.DigestMismatch: (ErrorCode.DIGEST_INVALID, None),
    model.ManifestUnknown: (ErrorCode.MANIFEST_UNKNOWN, None),
    model.ManifestInvalid: (ErrorCode.MANIFEST_INVALID, None),
    model.ManifestBlobsUnknown: (ErrorCode.MANIFEST_BLOB_UNKNOWN, None),
    model.Unsupported: (ErrorCode.UNSUPPORTED, None),
    model.UpstreamUnavailable: (ErrorCode.UNAVAILABLE, None),
    model.BlobInterrupted: (ErrorCode.UNAVAILABLE, None),  # only before an answer began; after, the connection is cut
}


def oci_error(error: model.ModelError) -> RegistryError:
    """The OCI error for a model error (by its class, or the nearest mapped base class)."""
    for kind in type(error).__mro__:
        row = MODEL_ERRORS.get(kind)
        if row is not None:
            code, headers = row
            return RegistryError(code, error.message, error.detail, headers=headers(error) if headers else None)
    return RegistryError(ErrorCode.UNKNOWN, error.message, error.detail)
