"""The one table from model errors to OCI codes."""

from __future__ import annotations

import json

from secreg.api.errors import MODEL_ERRORS, oci_error
from secreg.digest import Digest
from secreg.errors import ErrorCode
from secreg.httperrors import error_response
from secreg.registry import errors


def test_every_model_error_is_mapped() -> None:
    kinds = {getattr(errors, name) for name in errors.__all__} - {errors.ModelError}
    assert kinds == set(MODEL_ERRORS)


def test_mapping_keeps_message_detail_and_headers() -> None:
    mismatch = oci_error(errors.RangeMismatch(10, "chunk starts at 3, upload is at 10"))
    assert (mismatch.code, mismatch.status, mismatch.message) == (
        ErrorCode.RANGE_INVALID, 416, "chunk starts at 3, upload is at 10")
    assert mismatch.headers == {"Range": "0-9"}
    assert oci_error(errors.RangeMismatch(0, "empty")).headers == {"Range": "0-0"}

    unknown = oci_error(errors.BlobUnknown(Digest.of(b"x")))
    assert (unknown.code, unknown.status) == (ErrorCode.BLOB_UNKNOWN, 404)
    assert unknown.message == ErrorCode.BLOB_UNKNOWN.message
    assert unknown.detail == {"digest": str(Digest.of(b"x"))}

    readonly = oci_error(errors.Unsupported("read-only"))
    assert (readonly.code, readonly.status, readonly.message) == (ErrorCode.UNSUPPORTED, 405, "read-only")


def test_error_response_renders_the_spec_body() -> None:
    response = error_response(oci_error(errors.ManifestBlobsUnknown(["sha256:" + "a" * 64])))
    assert response.status_code == 400
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    entry = json.loads(response.body)["errors"][0]
    assert entry["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert entry["detail"] == {"digests": ["sha256:" + "a" * 64]}
    head = error_response(oci_error(errors.NameUnknown("team/x")), head=True)
    assert head.body == b"" and int(head.headers["Content-Length"]) > 0
