"""Small OCI client helpers for tests: push blobs and manifests the way real clients do."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
EMPTY_JSON = "application/vnd.oci.empty.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def push_blob(client: httpx.Client, name: str, data: bytes) -> str:
    digest = sha256(data)
    r = client.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data,
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return digest


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def image_manifest(config: bytes, layers: list[bytes], **extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor(OCI_LAYER, layer) for layer in layers],
        **extra,
    }


def manifest_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2).encode()


def put_manifest(client: httpx.Client, name: str, reference: str, document: dict[str, Any] | bytes,
                 media_type: str = OCI_MANIFEST, expect: int = 201) -> httpx.Response:
    body = document if isinstance(document, bytes) else manifest_bytes(document)
    r = client.put(f"/v2/{name}/manifests/{reference}", content=body, headers={"Content-Type": media_type})
    assert r.status_code == expect, r.text
    return r


def push_image(client: httpx.Client, name: str, tag: str, seed: str = "x", layers: int = 2) -> tuple[str, bytes]:
    """Push config + layers + manifest; returns (manifest digest, manifest bytes)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer_data = [f"{seed}-layer-{i}".encode() * 100 for i in range(layers)]
    push_blob(client, name, config)
    for layer in layer_data:
        push_blob(client, name, layer)
    body = manifest_bytes(image_manifest(config, layer_data))
    r = put_manifest(client, name, tag, body)
    return r.headers["Docker-Content-Digest"], body


def error_code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["code"])


def write_oci_layout(directory: Path, tag: str, layers: int = 3, layer_size: int = 256 * 1024,
                     seed: int = 0) -> str:
    """An OCI image layout on disk (what `skopeo copy oci:DIR:TAG` reads); returns the manifest digest."""
    import gzip
    import io
    import random
    import tarfile

    rng = random.Random(seed)
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def store(data: bytes) -> str:
        digest = sha256(data)
        (blobs / digest.split(":")[1]).write_bytes(data)
        return digest

    layer_descriptors = []
    diff_ids = []
    for i in range(layers):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            payload = rng.randbytes(layer_size)
            info = tarfile.TarInfo(f"layer{i}.bin")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        diff_ids.append(sha256(raw.getvalue()))
        compressed = gzip.compress(raw.getvalue(), mtime=0)
        layer_descriptors.append({"mediaType": OCI_LAYER, "digest": store(compressed), "size": len(compressed)})
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}}).encode()
    manifest = manifest_bytes({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": OCI_CONFIG, "digest": store(config), "size": len(config)},
                               "layers": layer_descriptors})
    manifest_digest = store(manifest)
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": manifest_digest,
                                                "size": len(manifest),
                                                "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (directory / "index.json").write_text(json.dumps(index))
    return manifest_digest
