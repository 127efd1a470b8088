"""What a manifest document must hold, and what it references. Pure: bytes in, facts or ManifestInvalid out."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from secreg import jsonlimit
from secreg.digest import Digest
from secreg.errors import RegistryError
from secreg.registry.errors import ManifestInvalid

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_MANIFESTS = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
INDEXES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
MANIFEST_TYPES = IMAGE_MANIFESTS | INDEXES
SCHEMA1_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
NON_DISTRIBUTABLE_PREFIXES = (
    "application/vnd.oci.image.layer.nondistributable.",
    "application/vnd.docker.image.rootfs.foreign.",
)


def invalid(message: str, detail: Any = None) -> ManifestInvalid:
    return ManifestInvalid(message, detail)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    raw: dict[str, Any]

    @property
    def is_foreign(self) -> bool:
        """A non-distributable layer fetched from its `urls`, which the registry need not hold."""
        return bool(self.raw.get("urls")) and self.media_type.startswith(NON_DISTRIBUTABLE_PREFIXES)


@dataclass(frozen=True)
class ParsedManifest:
    media_type: str
    blobs: tuple[Descriptor, ...]  # config and layers: must be blobs of the repository
    children: tuple[Descriptor, ...]  # manifests an index lists: must be manifests of the repository
    subject: Descriptor | None
    artifact_type: str | None
    annotations: dict[str, Any] | None


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise invalid(f"{where}: descriptor must be an object")
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise invalid(f"{where}: descriptor needs a mediaType string")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise invalid(f"{where}: descriptor needs a non-negative integer size")
    digest_text = value.get("digest")
    if not isinstance(digest_text, str):
        raise invalid(f"{where}: descriptor needs a digest")
    try:
        digest = Digest.parse(digest_text)
    except RegistryError as exc:
        raise invalid(f"{where}: {exc.message}") from None
    # `"data": null` is an absent field: Go clients serialise a nil []byte without omitempty so (the older
    # conformance suite's descriptors do), and the image spec gives null no other meaning.
    if value.get("data") is not None:
        _check_embedded_data(value["data"], digest, size, where)
    urls = value.get("urls")
    if urls is not None and not _strings(urls):
        raise invalid(f"{where}: urls must be a list of strings")
    _check_annotations(value.get("annotations"), f"{where}: annotations")
    if value.get("artifactType") is not None and not isinstance(value["artifactType"], str):
        raise invalid(f"{where}: artifactType must be a string")
    if value.get("platform") is not None:
        _check_platform(value["platform"], f"{where}: platform")
    return Descriptor(media_type, digest, size, value)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# Fields the image spec types and Go clients decode into typed structs (map[string]string, string, []string): a
# manifest with a number there is accepted by Python but refused by every puller, and its annotations are copied
# into the referrers list of its subject, where one such entry broke the list for every client.
def _check_annotations(value: Any, where: str) -> None:
    if value is not None and (not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values())):
        raise invalid(f"{where} must be an object of strings")


_PLATFORM_STRINGS = ("architecture", "os", "os.version", "variant")
_PLATFORM_LISTS = ("os.features", "features")


def _check_platform(value: Any, where: str) -> None:
    if (not isinstance(value, dict)
            or any(value.get(key) is not None and not isinstance(value[key], str) for key in _PLATFORM_STRINGS)
            or any(value.get(key) is not None and not _strings(value[key]) for key in _PLATFORM_LISTS)):
        raise invalid(f"{where} must be an object with string architecture, os, os.version, variant and "
                      "lists of strings os.features, features")


def _check_embedded_data(data: Any, digest: Digest, size: int, where: str) -> None:
    if not isinstance(data, str):
        raise invalid(f"{where}: data must be a base64 string")
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{where}: data is not valid base64") from None
    if len(decoded) != size or Digest.of(decoded, digest.algorithm) != digest:
        raise invalid(f"{where}: embedded data does not match its digest and size")


def parse_manifest(content: bytes, content_type: str | None) -> ParsedManifest:
    try:
        document = jsonlimit.loads(content)
    except jsonlimit.NestingError as exc:
        raise invalid(f"manifest is {exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise invalid("manifest is not valid JSON") from None
    if not isinstance(document, dict):
        raise invalid("manifest must be a JSON object")
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise invalid("mediaType must be a string")
    content_type = (content_type or "").split(";", 1)[0].strip() or None
    if content_type in SCHEMA1_TYPES or declared in SCHEMA1_TYPES or document.get("schemaVersion") == 1:
        raise invalid("Docker schema 1 manifests are not supported; push with a current client (schema 2 or OCI)")
    if declared and content_type and declared != content_type:
        raise invalid(f"Content-Type {content_type!r} does not match the manifest's mediaType {declared!r}")
    media_type = declared or content_type or _guess(document)
    if media_type not in MANIFEST_TYPES:
        raise invalid(f"unsupported manifest media type {media_type!r}", {"supported": sorted(MANIFEST_TYPES)})
    if document.get("schemaVersion") != 2:
        raise invalid("schemaVersion must be 2")
    subject = _descriptor(document["subject"], "subject") if document.get("subject") is not None else None
    artifact_type = document.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise invalid("artifactType must be a string")
    annotations = document.get("annotations")
    _check_annotations(annotations, "annotations")

    if media_type in IMAGE_MANIFESTS:
        if "manifests" in document:
            raise invalid("an image manifest has no 'manifests' field")
        config = _descriptor(document.get("config"), "config")
        layers_value = document.get("layers", [])
        if not isinstance(layers_value, list):
            raise invalid("layers must be a list")
        layers = [_descriptor(layer, f"layers[{i}]") for i, layer in enumerate(layers_value)]
        if artifact_type is None:  # the referrers API reports the config's type then (image-spec 1.1)
            artifact_type = config.media_type
        return ParsedManifest(media_type, (config, *layers), (), subject, artifact_type, annotations)

    manifests_value = document.get("manifests")
    if not isinstance(manifests_value, list):
        raise invalid("an index needs a 'manifests' list")
    if "layers" in document or "config" in document:
        raise invalid("an index has no 'config' or 'layers' field")
    children = tuple(_descriptor(m, f"manifests[{i}]") for i, m in enumerate(manifests_value))
    return ParsedManifest(media_type, (), children, subject, artifact_type, annotations)


def _guess(document: dict[str, Any]) -> str:
    if "manifests" in document:
        return OCI_INDEX
    if "config" in document:
        return OCI_MANIFEST
    raise invalid("cannot tell the manifest's media type: send Content-Type or a mediaType field")


def referrer_descriptor(parsed: ParsedManifest, digest: Digest, size: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"mediaType": parsed.media_type, "digest": str(digest), "size": size}
    if parsed.artifact_type:
        entry["artifactType"] = parsed.artifact_type
    if parsed.annotations:
        entry["annotations"] = parsed.annotations
    return entry
