"""The test data of the classic suite (`conformance/setup.go`) and the requests its specs repeat.

Documents are built field by field in the Go structs' order and serialised with tab indentation, as
`json.MarshalIndent(&x, "", "\\t")` does; Go's `[]byte` fields become base64 strings and a nil `[]byte`
without `omitempty` becomes `null`, which the suite relies on to test unknown fields.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
EMPTY_JSON_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_JSON_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

NAMESPACE = "conformance/classic"  # OCI_NAMESPACE
CROSSMOUNT_NAMESPACE = "conformance/crossmount"  # OCI_CROSSMOUNT_NAMESPACE
TEST_TAG_NAME = "tagtest0"
EMPTY_LAYER_TEST_TAG = "emptylayer"
NONEXISTENT_MANIFEST = ".INVALID_MANIFEST_NAME"
INVALID_MANIFEST_CONTENT = b"blablabla"
TEST_ANNOTATION_KEY = "org.opencontainers.conformance.test"
REF_ARTIFACT_TYPE_A = "application/vnd.nhl.peanut.butter.bagel"
REF_ARTIFACT_TYPE_B = "application/vnd.nba.strawberry.jam.croissant"
REF_ARTIFACT_TYPE_INDEX = "application/vnd.food.stand"
ARTIFACT_TYPE_FILTER = "artifactType"

# `echo '...' > test.txt; tar czvf test.tar.gz test.txt; base64`: a small real layer.
LAYER_BASE64 = (
    "H4sIAAAAAAAAA+3OQQrCMBCF4a49xXgBSUnaHMCTRBptQRNpp6i3t0UEV7oqIv7fYgbmzeJpHHSjVy0"
    "WZCa1c/MufWVe94N3RWlrZ72x3k/30nhbFWKWLPU0Dhp6keJ8im//PuU/6pZH2WVtYx8b0Sz7LjWSR5VLG6YRBumSzOlGtjkd+qD"
    "jMWiX07Befbs7AAAAAAAAAAAAAAAAAPyzO34MnqoAKAAA"
)

# The codes the classic suite accepts in an error body (`errorCodes` in setup.go).
ERROR_CODES = frozenset({
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "MANIFEST_UNVERIFIED", "NAME_INVALID", "NAME_UNKNOWN",
    "SIZE_INVALID", "TAG_INVALID", "UNAUTHORIZED", "DENIED", "UNSUPPORTED",
})
NUM_WORKFLOWS = 5  # pull, push, content discovery, content management, and the referrers subject


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def marshal_indent(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent="\t").encode()


@dataclass(frozen=True)
class Blob:
    content: bytes

    @property
    def digest(self) -> str:
        return sha256(self.content)

    @property
    def length(self) -> str:
        return str(len(self.content))


def descriptor(media_type: str, content: bytes, data: str | None = None,
               unspecified: str | None = None) -> dict[str, Any]:
    """The suite's `descriptor` struct: `data` is left out when empty, the unknown field is always there."""
    document: dict[str, Any] = {"mediaType": media_type, "digest": sha256(content), "size": len(content)}
    if data is not None:
        document["data"] = data
    document["newUnspecifiedField"] = unspecified
    return document


def _random_author() -> str:
    letters = string.digits + string.ascii_letters + "-"
    return "".join(secrets.choice(letters) for _ in range(16))


@dataclass
class ClassicData:
    """Everything `init()` in setup.go prepares; a fresh instance per module gives fresh digests."""

    seed: int = field(default_factory=lambda: random.randrange(2**31))
    configs: list[Blob] = field(init=False)
    manifests: list[Blob] = field(init=False)
    layer: Blob = field(init=False)
    empty_layer_manifest: Blob = field(init=False)
    blob_a: Blob = field(init=False)
    blob_b: Blob = field(init=False)
    empty_json: Blob = field(init=False)
    ref_blob_a: Blob = field(init=False)
    ref_blob_b: Blob = field(init=False)
    refs_a_config: Blob = field(init=False)
    refs_a_layer: Blob = field(init=False)
    refs_b_config: Blob = field(init=False)
    refs_b_layer: Blob = field(init=False)
    refs_c_layer: Blob = field(init=False)
    refs_index: Blob = field(init=False)
    annotation_values: dict[str, str] = field(init=False)
    dummy_digest: str = field(init=False)
    chunk1: bytes = field(init=False)
    chunk2: bytes = field(init=False)
    chunk1_range: str = field(init=False)
    chunk2_range: str = field(init=False)

    def __post_init__(self) -> None:
        self.configs = [Blob(marshal_indent({
            "author": _random_author(), "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
        })) for _ in range(NUM_WORKFLOWS)]
        self.layer = Blob(base64.b64decode(LAYER_BASE64))
        layers = [descriptor(OCI_LAYER_GZIP, self.layer.content)]
        self.manifests = [Blob(marshal_indent({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": self._config_descriptor(config), "layers": layers,
        })) for config in self.configs]
        # No mediaType field: Go leaves the empty string out (omitempty).
        self.empty_layer_manifest = Blob(marshal_indent({
            "schemaVersion": 2, "config": self._config_descriptor(self.configs[1]), "layers": [],
        }))
        self.blob_a = Blob(random.Random(self.seed + 1).randbytes(42))
        self.setup_chunked_blob(42)
        self.empty_json = Blob(b"{}")
        self.ref_blob_a = Blob(b"NHL Peanut Butter on my NHL bagel")
        self.ref_blob_b = Blob(b"NBA Strawberry Jam on my NBA croissant")
        empty = descriptor(EMPTY_JSON_TYPE, self.empty_json.content)
        subject = descriptor(OCI_MANIFEST, self.manifests[4].content)
        self.refs_a_config = self._artifact(None, descriptor(REF_ARTIFACT_TYPE_A, self.ref_blob_a.content),
                                            [empty], subject, "test config a")
        self.refs_b_config = self._artifact(None, descriptor(REF_ARTIFACT_TYPE_B, self.ref_blob_b.content),
                                            [empty], subject, "test config b")
        self.refs_a_layer = self._artifact(REF_ARTIFACT_TYPE_A, empty,
                                           [descriptor(REF_ARTIFACT_TYPE_A, self.ref_blob_a.content)],
                                           subject, "test layer a")
        self.refs_b_layer = self._artifact(REF_ARTIFACT_TYPE_B, empty,
                                           [descriptor(REF_ARTIFACT_TYPE_B, self.ref_blob_b.content)],
                                           subject, "test layer b")
        # The same as B, but its subject (manifests[3]) is never pushed.
        self.refs_c_layer = self._artifact(REF_ARTIFACT_TYPE_B, empty,
                                           [descriptor(REF_ARTIFACT_TYPE_B, self.ref_blob_b.content)],
                                           descriptor(OCI_MANIFEST, self.manifests[3].content), None)
        self.refs_index = Blob(marshal_indent({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": REF_ARTIFACT_TYPE_INDEX,
            "manifests": [descriptor(OCI_MANIFEST, self.refs_a_config.content),
                          descriptor(OCI_MANIFEST, self.refs_a_layer.content)],
            "subject": subject, "annotations": {TEST_ANNOTATION_KEY: "test index"},
        }))
        self.annotation_values = {
            self.refs_a_config.digest: "test config a", self.refs_b_config.digest: "test config b",
            self.refs_a_layer.digest: "test layer a", self.refs_b_layer.digest: "test layer b",
            self.refs_index.digest: "test index",
        }
        self.dummy_digest = sha256(b"hello world")

    @staticmethod
    def _config_descriptor(config: Blob) -> dict[str, Any]:
        # `Data` must be the config content; `NewUnspecifiedField` is set, its content does not matter.
        return descriptor(OCI_CONFIG, config.content, data=b64(config.content), unspecified=b64(b"hello world"))

    @staticmethod
    def _artifact(artifact_type: str | None, config: dict[str, Any], layers: list[dict[str, Any]],
                  subject: dict[str, Any], annotation: str | None) -> Blob:
        document: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
        if artifact_type:
            document["artifactType"] = artifact_type
        document.update(config=config, layers=layers, subject=subject)
        if annotation is not None:
            document["annotations"] = {TEST_ANNOTATION_KEY: annotation}
        return Blob(marshal_indent(document))

    def setup_chunked_blob(self, size: int) -> None:
        """`setupChunkedBlob`: blob B in two chunks, the first one byte past the middle."""
        self.blob_b = Blob(random.Random(self.seed + 2).randbytes(size))
        self.chunk1 = self.blob_b.content[: size // 2 + 1]
        self.chunk2 = self.blob_b.content[size // 2 + 1 :]
        self.chunk1_range = f"0-{len(self.chunk1) - 1}"
        self.chunk2_range = f"{len(self.chunk1)}-{len(self.blob_b.content) - 1}"


def ok(response: httpx.Response) -> bool:
    return 200 <= response.status_code < 300


def error_codes_of(response: httpx.Response) -> list[str]:
    """`resp.Errors()`: the codes of an OCI error body (fails if the body is not one)."""
    errors = response.json()["errors"]
    assert errors, response.text
    return [str(e["code"]) for e in errors]


def post_put_blob(client: httpx.Client, blob: Blob, name: str = NAMESPACE) -> httpx.Response:
    """POST for a session, then PUT the whole blob to it: how every Setup spec populates a blob."""
    r = client.post(f"/v2/{name}/blobs/uploads/")
    assert r.status_code == 202, r.text
    return client.put(r.headers["Location"], params={"digest": blob.digest}, content=blob.content,
                      headers={"Content-Type": "application/octet-stream", "Content-Length": blob.length})


def put_manifest(client: httpx.Client, reference: str, manifest: Blob, name: str = NAMESPACE,
                 media_type: str = OCI_MANIFEST) -> httpx.Response:
    return client.put(f"/v2/{name}/manifests/{reference}", content=manifest.content,
                      headers={"Content-Type": media_type})


def tag_list(response: httpx.Response) -> list[str]:
    """`getTagList`: the tags of a listing, or none when the body is not one."""
    try:
        return list(response.json()["tags"])
    except (ValueError, KeyError, TypeError):
        return []


def delete_ok(response: httpx.Response, *also: int) -> bool:
    """Teardown deletes accept 2xx, 405 (deletes disabled) and whatever else the spec lists."""
    return ok(response) or response.status_code in (405, *also)
