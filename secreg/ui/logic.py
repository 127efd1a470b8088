"""What the pages show, computed from manifest and config documents: sizes, layer tables, platform tables,
referrers grouped under their subject, pagination. Pure functions of plain values, tested without a server.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")

DOCKER_INDEX = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX_TYPES = frozenset({DOCKER_INDEX, OCI_INDEX})
# How `docker buildx` stores provenance and SBOM attestations: as extra entries of the image index.
BUILDX_REFERENCE_TYPE = "vnd.docker.reference.type"
BUILDX_REFERENCE_DIGEST = "vnd.docker.reference.digest"
CREATED = "org.opencontainers.image.created"

KINDS = ("signature", "sbom", "attestation", "other")
KIND_TITLES = {"signature": "Signatures", "sbom": "SBOMs", "attestation": "Attestations", "other": "Other artifacts"}


def human_size(size: int | None) -> str:
    """1023 -> "1023 B", 1536 -> "1.5 KiB", as `secreg gc` prints sizes; None -> "-"."""
    if size is None or size < 0:
        return "-"
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    return f"{size} B"  # not reached


def format_time(moment: float | None) -> str:
    if moment is None or not math.isfinite(moment):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))


_FRACTION = re.compile(r"\.(\d+)")


def format_created(value: Any) -> str:
    """An RFC 3339 `created` time (Docker writes nanoseconds) in the same form as `format_time`."""
    if not isinstance(value, str) or not value:
        return "-"
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6], value.strip()).replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return value[:64]
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_time(moment.timestamp())


def is_index(media_type: str, document: Mapping[str, Any]) -> bool:
    return media_type in INDEX_TYPES or ("manifests" in document and "config" not in document)


def _size(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _descriptors(document: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    value = document.get(key)
    return [d for d in value if isinstance(d, dict)] if isinstance(value, list) else []


def _pairs(mapping: Any) -> list[tuple[str, str]]:
    if not isinstance(mapping, dict):
        return []
    return sorted((str(k), v if isinstance(v, str) else str(v)) for k, v in mapping.items())


def image_size(document: Mapping[str, Any]) -> int:
    """What pulling the image downloads: its config and layers, compressed, as the manifest states them."""
    config = document.get("config")
    total = _size(config.get("size")) if isinstance(config, dict) else 0
    return total + sum(_size(layer.get("size")) for layer in _descriptors(document, "layers"))


def platform_label(platform: Any) -> str:
    """{"os": "linux", "architecture": "arm64", "variant": "v8"} -> "linux/arm64/v8"."""
    if not isinstance(platform, dict):
        return "-"
    parts = [platform.get("os"), platform.get("architecture"), platform.get("variant")]
    return "/".join(str(p) for p in parts if isinstance(p, str) and p) or "-"


@dataclass(frozen=True)
class Layer:
    number: int
    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class ImageView:
    media_type: str
    digest: str
    config_digest: str
    config_size: int
    layers: tuple[Layer, ...]
    total_size: int
    created: str
    platform: str
    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]
    artifact_type: str


def image_view(digest: str, media_type: str, document: Mapping[str, Any],
               config: Mapping[str, Any] | None) -> ImageView:
    """An image manifest and (when readable) its config, as the manifest page shows them."""
    config_descriptor = document.get("config") if isinstance(document.get("config"), dict) else {}
    assert isinstance(config_descriptor, dict)
    layers = tuple(
        Layer(i + 1, str(d.get("mediaType", "")), str(d.get("digest", "")), _size(d.get("size")))
        for i, d in enumerate(_descriptors(document, "layers"))
    )
    runtime = config.get("config") if config else None
    labels = _pairs(runtime.get("Labels")) if isinstance(runtime, dict) else []
    platform = platform_label({k: config.get(k) for k in ("os", "architecture", "variant")}) if config else "-"
    artifact = document.get("artifactType")
    return ImageView(
        media_type=media_type,
        digest=digest,
        config_digest=str(config_descriptor.get("digest", "")),
        config_size=_size(config_descriptor.get("size")),
        layers=layers,
        total_size=image_size(document),
        created=format_created(config.get("created")) if config else "-",
        platform=platform,
        labels=tuple(labels),
        annotations=tuple(_pairs(document.get("annotations"))),
        artifact_type=artifact if isinstance(artifact, str) else str(config_descriptor.get("mediaType", "")),
    )


@dataclass(frozen=True)
class ReferrerRow:
    digest: str
    media_type: str
    artifact_type: str
    size: int | None
    created: str
    kind: str
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ReferrerGroup:
    kind: str
    title: str
    rows: tuple[ReferrerRow, ...]


def referrer_kind(artifact_type: str) -> str:
    """Which heading an artifact goes under, from its artifactType (or buildx's reference type)."""
    text = artifact_type.lower()
    if "signature" in text or "cosign.artifact.sig" in text or text.endswith(".sig"):
        return "signature"
    if "spdx" in text or "cyclonedx" in text or "sbom" in text or "syft" in text:
        return "sbom"
    if "in-toto" in text or "attestation" in text or "provenance" in text or "sigstore.bundle" in text:
        return "attestation"
    return "other"


def group_referrers(rows: Iterable[ReferrerRow]) -> list[ReferrerGroup]:
    """Rows under one heading per kind (signatures, SBOMs, attestations, other), newest first within a kind;
    kinds without rows are left out."""
    by_kind: dict[str, list[ReferrerRow]] = {}
    for row in rows:
        by_kind.setdefault(row.kind, []).append(row)
    groups = []
    for kind in KINDS:
        if kind in by_kind:
            ordered = sorted(by_kind[kind], key=lambda r: (r.created, r.digest), reverse=True)
            groups.append(ReferrerGroup(kind, KIND_TITLES[kind], tuple(ordered)))
    return groups


def referrer_rows(descriptors: Iterable[Mapping[str, Any]]) -> list[ReferrerRow]:
    """Descriptors as the referrers API lists them (mediaType, digest, size, artifactType, annotations)."""
    rows = []
    for entry in descriptors:
        artifact = entry.get("artifactType")
        artifact_type = artifact if isinstance(artifact, str) else str(entry.get("mediaType", ""))
        annotations = entry.get("annotations") if isinstance(entry.get("annotations"), dict) else {}
        assert isinstance(annotations, dict)
        rows.append(ReferrerRow(
            digest=str(entry.get("digest", "")),
            media_type=str(entry.get("mediaType", "")),
            artifact_type=artifact_type,
            size=_size(entry.get("size")) if "size" in entry else None,
            created=format_created(annotations.get(CREATED)) if CREATED in annotations else "-",
            kind=referrer_kind(artifact_type),
            annotations=tuple(_pairs(annotations)),
        ))
    return rows


@dataclass(frozen=True)
class PlatformRow:
    platform: str
    digest: str
    media_type: str
    size: int | None  # the platform image's config + layers; None when its manifest is not readable
    attestations: tuple[ReferrerRow, ...] = field(default=())


def platform_rows(document: Mapping[str, Any], sizes: Mapping[str, int | None]) -> list[PlatformRow]:
    """An index's platforms, each with its own size (from `sizes`, by child digest) and digest. Buildx
    attestation entries (platform unknown/unknown, annotated with the digest they describe) are not
    platforms: they are listed under the platform they refer to."""
    children = _descriptors(document, "manifests")
    attached: dict[str, list[ReferrerRow]] = {}
    platforms: list[dict[str, Any]] = []
    for child in children:
        annotations = child.get("annotations") if isinstance(child.get("annotations"), dict) else {}
        assert isinstance(annotations, dict)
        subject = annotations.get(BUILDX_REFERENCE_DIGEST)
        if annotations.get(BUILDX_REFERENCE_TYPE) == "attestation-manifest" and isinstance(subject, str):
            digest = str(child.get("digest", ""))
            attached.setdefault(subject, []).append(ReferrerRow(
                digest=digest, media_type=str(child.get("mediaType", "")), artifact_type="attestation-manifest",
                size=sizes.get(digest), created="-", kind="attestation",
            ))
        else:
            platforms.append(child)
    rows = []
    for child in platforms:
        digest = str(child.get("digest", ""))
        rows.append(PlatformRow(
            platform=platform_label(child.get("platform")),
            digest=digest,
            media_type=str(child.get("mediaType", "")),
            size=sizes.get(digest),
            attestations=tuple(attached.pop(digest, ())),
        ))
    for orphans in attached.values():  # attestations of a digest the index does not list
        for row in orphans:
            rows.append(PlatformRow("-", row.digest, row.media_type, row.size, ()))
    return rows


@dataclass(frozen=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    number: int  # 1-based
    pages: int
    total: int

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


def page_number(text: str | None) -> int:
    """A `?page=` value: ASCII digits only, at least 1 (anything else is page 1)."""
    if not text or len(text) > 9 or not text.isascii() or not text.isdigit():
        return 1
    return max(1, int(text))


def paginate(items: Sequence[T], number: int, per_page: int) -> Page[T]:
    pages = max(1, math.ceil(len(items) / per_page))
    number = min(max(1, number), pages)
    start = (number - 1) * per_page
    return Page(tuple(items[start:start + per_page]), number, pages, len(items))


def search(names: Iterable[str], query: str) -> list[str]:
    """Names containing every space-separated word of `query` (case-insensitive)."""
    words = [w for w in query.lower().split() if w]
    return [n for n in names if all(w in n for w in words)]


def pull_commands(host: str, name: str, tag: str | None, digest: str) -> list[str]:
    commands = [f"docker pull {host}/{name}:{tag}"] if tag else []
    commands.append(f"docker pull {host}/{name}@{digest}")
    return commands


COSIGN_TAG = re.compile(r"^(sha256)-([0-9a-f]{64})\.(sig|att|sbom)$")


def tag_subject(tag: str) -> tuple[str, str] | None:
    """Tags cosign writes for artifacts of an image (`sha256-<hex>.sig`, `.att`, `.sbom`): (subject digest,
    kind), so they are shown under their image as well."""
    match = COSIGN_TAG.match(tag)
    if match is None:
        return None
    kinds = {"sig": "signature", "att": "attestation", "sbom": "sbom"}
    return f"{match.group(1)}:{match.group(2)}", kinds[match.group(3)]
