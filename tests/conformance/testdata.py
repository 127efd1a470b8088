"""`testdata.go` of the newer conformance layout, ported: the media types and the `DataSet` generator.

`DataSet` builds images, indexes and artifacts the same way the Go generator does (Go's `json.Marshal` field
order, compact, `omitempty` fields left out). `Unsupported` is `errRegUnsupported` (see runner.py).
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import io
import json
import os
import secrets
import tarfile
from dataclasses import dataclass, field, replace
from typing import Any

MT_EXAMPLE_CONF1 = "application/vnd.example.oci.conformance.v1"
MT_EXAMPLE_CONF2 = "application/vnd.example.oci.conformance.v2"
MT_OCTET_STREAM = "application/octet-stream"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_IMAGE = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_PRE = "application/vnd.oci.image.layer.v1."
MT_OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ND = "application/vnd.oci.image.layer.nondistributable.v1.tar"
MT_OCI_LAYER_ND_GZ = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
MT_OCI_EMPTY_JSON = "application/vnd.oci.empty.v1+json"
CHUNK_MIN = 1024  # config.go: the suite never sends chunks smaller than this (but the last)

REPO1 = "conformance/repo1"
REPO2 = "conformance/repo2"

Descriptor = dict[str, Any]


class Unsupported(AssertionError):
    """`errRegUnsupported`: the request worked only through a fallback the Go suite reports as a skip."""


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def rand_text() -> str:
    """`rand.Text()`: 26 random base32 characters."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return "".join(secrets.choice(alphabet) for _ in range(26))


def go_json(document: Any) -> bytes:
    """`json.Marshal`: compact, keys in the order the struct declares them (our dicts keep that order)."""
    return json.dumps(document, separators=(",", ":")).encode()


def detect_media_type(body: bytes) -> str:
    try:
        declared = json.loads(body).get("mediaType")
    except (ValueError, AttributeError):
        declared = None
    return declared if isinstance(declared, str) and declared else MT_OCI_IMAGE


def detect_subject(body: bytes) -> Descriptor | None:
    try:
        subject = json.loads(body).get("subject")
    except (ValueError, AttributeError):
        return None
    return subject if isinstance(subject, dict) else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- testdata.go -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GenOpts:
    """`genOptS`: the knobs of every generator; `None` means the generator's own default."""

    algo: str = "sha256"
    annotations: dict[str, str] | None = None
    annotation_uniq: bool = False
    artifact_type: str = ""
    blob_size: int = 2048
    compress: bool = True
    config_bytes: bytes | None = None
    config_media_type: str = ""
    descriptor_media_type: str = MT_OCTET_STREAM
    extra_field: bool = False
    layer_bytes: bytes | None = None
    layer_count: int = 2
    layer_media_type: str = ""
    platform: dict[str, str] = field(default_factory=lambda: {"architecture": "amd64", "os": "linux"})
    platforms: tuple[dict[str, str], ...] = ({"architecture": "amd64", "os": "linux"},
                                             {"architecture": "arm64", "os": "linux"})
    set_data: bool = False
    subject: Descriptor | None = None
    tag: str = ""


def _add_json_field(document: dict[str, Any]) -> dict[str, Any]:
    """`genAddJSONFields`: one extra field with a random name and value."""
    return {**document, f"org.{rand_text()}": rand_text()}


@dataclass
class DataSet:
    """`testData`: what one data test pushes, pulls, lists, queries and deletes."""

    name: str
    tags: dict[str, str] = field(default_factory=dict)
    tag_pushed: set[str] = field(default_factory=set)
    desc: dict[str, Descriptor] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, bytes] = field(default_factory=dict)
    man_order: list[str] = field(default_factory=list)
    referrers: dict[str, list[Descriptor]] = field(default_factory=dict)
    skip_pull: set[str] = field(default_factory=set)  # pullOpts SkipPullTest
    bad_digest: set[str] = field(default_factory=set)  # pushOpts ExpectBadDigest
    tag_param: set[str] = field(default_factory=set)  # pushOpts TagParam

    def _descriptor(self, media_type: str, dig: str, body: bytes, o: GenOpts) -> Descriptor:
        entry: Descriptor = {"mediaType": media_type, "digest": dig, "size": len(body)}
        if o.set_data:
            entry["data"] = _b64(body)
        return entry

    def add_blob(self, body: bytes, o: GenOpts) -> str:
        dig = digest_of(body, o.algo)
        self.blobs[dig] = body
        self.desc[dig] = self._descriptor(o.descriptor_media_type, dig, body, o)
        return dig

    def gen_blob(self, o: GenOpts) -> tuple[str, bytes]:
        body = os.urandom(o.blob_size)
        return self.add_blob(body, o), body

    def gen_layer(self, number: int, o: GenOpts) -> tuple[str, str]:
        """A tar with one file, gzipped unless `compress` is off: (compressed digest, uncompressed digest)."""
        content = (f"Conformance test file contents for file number {number}.\n"
                   f"Todays lucky number is {secrets.randbelow(2**63)}\n").encode()
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            info = tarfile.TarInfo(f"./conformance-{number}.txt")
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
        uncompressed = raw.getvalue()
        body = gzip.compress(uncompressed) if o.compress else uncompressed
        media_type = MT_OCI_LAYER_GZ if o.compress else MT_OCI_LAYER
        dig = digest_of(body, o.algo)
        self.blobs[dig] = body
        self.desc[dig] = self._descriptor(media_type, dig, body, o)
        return dig, digest_of(uncompressed, o.algo)

    def gen_config(self, platform: dict[str, str], layers: list[str], o: GenOpts) -> str:
        config: dict[str, Any] = {"author": "OCI Conformance Test", **platform, "config": {},
                                  "rootfs": {"type": "layers", "diff_ids": layers}}
        body = go_json(_add_json_field(config) if o.extra_field else config)
        dig = digest_of(body, o.algo)
        self.blobs[dig] = body
        self.desc[dig] = self._descriptor(o.config_media_type or MT_OCI_CONFIG, dig, body, o)
        return dig

    def _annotations(self, o: GenOpts) -> dict[str, str] | None:
        annotations = dict(o.annotations) if o.annotations is not None else None
        if o.annotation_uniq:
            annotations = annotations or {}
            annotations[f"org.example.{rand_text()}"] = rand_text()
        return annotations

    def _store_manifest(self, document: dict[str, Any], artifact_type: str, o: GenOpts) -> str:
        body = go_json(_add_json_field(document) if o.extra_field else document)
        dig = digest_of(body, o.algo)
        self.manifests[dig] = body
        self.man_order.append(dig)
        self.desc[dig] = self._descriptor(document["mediaType"], dig, body, o)
        if o.subject is not None:
            referrer: Descriptor = {"mediaType": document["mediaType"], "digest": dig, "size": len(body)}
            if artifact_type:
                referrer["artifactType"] = artifact_type
            if document.get("annotations"):
                referrer["annotations"] = document["annotations"]
            self.referrers.setdefault(o.subject["digest"], []).append(referrer)
        if o.tag:
            self.tags[o.tag] = dig
        return dig

    def gen_manifest(self, config: Descriptor, layers: list[Descriptor], o: GenOpts) -> str:
        document: dict[str, Any] = {"schemaVersion": 2, "mediaType": MT_OCI_IMAGE}
        if o.artifact_type:
            document["artifactType"] = o.artifact_type
        document.update(config=config, layers=layers)
        if o.subject is not None:
            document["subject"] = o.subject
        annotations = self._annotations(o)
        if annotations:
            document["annotations"] = annotations
        return self._store_manifest(document, o.artifact_type or config["mediaType"], o)

    def gen_manifest_full(self, o: GenOpts) -> str:
        compressed: list[str] = []
        uncompressed: list[str] = []
        for number in range(o.layer_count):
            if not o.layer_media_type or o.layer_media_type.startswith(MT_OCI_LAYER_PRE):
                c, u = self.gen_layer(number, o)
            else:  # an artifact's blob
                blob_opts = replace(o, descriptor_media_type=o.layer_media_type)
                if o.layer_bytes is not None:
                    c = u = self.add_blob(o.layer_bytes, blob_opts)
                else:
                    c = u = self.gen_blob(blob_opts)[0]
            compressed.append(c)
            uncompressed.append(u)
        if not o.config_media_type or o.config_media_type == MT_OCI_CONFIG:
            config = self.gen_config(o.platform, uncompressed, o)
        else:
            config = self.add_blob(o.config_bytes or b"", replace(o, descriptor_media_type=o.config_media_type))
        return self.gen_manifest(self.desc[config], [self.desc[d] for d in compressed], o)

    def gen_index(self, platforms: list[dict[str, str] | None], manifests: list[str], o: GenOpts) -> str:
        entries = []
        for platform, dig in zip(platforms, manifests, strict=True):
            entry = copy.deepcopy(self.desc[dig])
            if platform is not None:
                entry["platform"] = platform
            entries.append(entry)
        document: dict[str, Any] = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX}
        if o.artifact_type:
            document["artifactType"] = o.artifact_type
        document["manifests"] = entries
        if o.subject is not None:
            document["subject"] = o.subject
        annotations = self._annotations(o)
        if annotations:
            document["annotations"] = annotations
        return self._store_manifest(document, o.artifact_type, o)

    def gen_index_full(self, o: GenOpts) -> str:
        images = [self.gen_manifest_full(replace(o, platform=platform)) for platform in o.platforms]
        return self.gen_index(list(o.platforms), images, o)


def generate_data_sets() -> dict[str, DataSet]:
    """`GenerateData` with every data option on, except "sparse", which needs its own expectations."""
    sets: dict[str, DataSet] = {}

    def new(name: str) -> DataSet:
        sets[name] = DataSet(name)
        return sets[name]

    new("image").gen_manifest_full(GenOpts(tag="image"))
    new("image-uncompressed").gen_manifest_full(GenOpts(tag="image-uncompressed", compress=False))
    large = {f"large-annotation-{i}": "A" * 10000 for i in range(390)}
    new("large-manifest").gen_manifest_full(GenOpts(tag="large-manifest", annotations=large))
    new("index").gen_index_full(GenOpts(tag="index"))
    td = new("nested-index")
    first, second = td.gen_index_full(GenOpts()), td.gen_index_full(GenOpts())
    td.gen_index([None, None], [first, second], GenOpts(tag="index-of-index"))
    new("empty-index").gen_index_full(GenOpts(tag="index", platforms=()))
    artifact = GenOpts(artifact_type=MT_EXAMPLE_CONF1, config_media_type=MT_OCI_EMPTY_JSON, config_bytes=b"{}",
                       layer_count=1, layer_media_type=MT_EXAMPLE_CONF1)
    new("artifact").gen_manifest_full(replace(artifact, tag="artifact"))
    new("artifact-index").gen_index_full(replace(artifact, tag="artifact-index"))
    new("artifact-without-layers").gen_manifest_full(replace(
        artifact, tag="artifact-without-layers", layer_bytes=b"{}", layer_media_type=MT_OCI_EMPTY_JSON))
    td = new("artifacts-with-subject")
    subject = td.desc[td.gen_manifest_full(GenOpts(tag="image"))]
    td.gen_manifest_full(GenOpts(subject=subject))
    hello = {"org.opencontainers.conformance": "hello conformance test"}
    referrer = replace(artifact, annotations=hello, annotation_uniq=True, subject=subject)
    td.gen_manifest_full(replace(referrer, tag="tagged-artifact1"))
    td.gen_manifest_full(replace(referrer, artifact_type=MT_EXAMPLE_CONF2, layer_media_type=MT_OCTET_STREAM,
                                 tag="tagged-artifact2"))
    td = new("index-with-subject")
    subject = td.desc[td.gen_index_full(GenOpts(tag="index"))]
    td.gen_index_full(replace(artifact, annotations=hello, annotation_uniq=True, subject=subject,
                              tag="tagged-artifact"))
    missing = {"mediaType": MT_OCI_IMAGE, "digest": digest_of(b"missing content"), "size": 123}
    new("missing-subject").gen_manifest_full(replace(artifact, annotations=hello, annotation_uniq=True,
                                                     subject=missing, tag="tagged-artifact"))
    new("data-field").gen_manifest_full(GenOpts(tag="data-field", set_data=True))
    _non_distributable(new("non-distributable-layers"))
    new("custom-fields").gen_index_full(GenOpts(tag="custom-fields", extra_field=True))
    new("no-layers").gen_manifest_full(GenOpts(tag="no-layers", layer_count=0))
    new("sha512").gen_index_full(GenOpts(algo="sha512"))
    for algo in ("sha256", "sha512"):
        name = f"tag-param-{algo}"
        td = new(name)
        td.gen_index_full(GenOpts(tag=name, algo=algo))  # the top-level index gets two tags
        for i, dig in enumerate(td.man_order):
            td.tags[f"{name}-{i}"] = dig
            td.tag_param.add(dig)
    td = new("bad-digest-image")
    dig = td.gen_manifest_full(GenOpts())
    td.skip_pull.add(dig)
    td.bad_digest.add(dig)
    td.manifests[dig] += b"  "  # whitespace: the body no longer matches its digest
    return sets


def _non_distributable(td: DataSet) -> None:
    layers: list[Descriptor] = []
    config_layers: list[str] = []
    for media_type, size in ((MT_OCI_LAYER_ND_GZ, 123456), (MT_OCI_LAYER_ND, 12345)):
        dig = digest_of(os.urandom(256))
        layers.append({"mediaType": media_type, "digest": dig, "size": size,
                       "urls": [f"https://store.example.com/blobs/sha256/{dig.split(':')[1]}"]})
        config_layers.append(dig)
    compressed, uncompressed = td.gen_layer(1, GenOpts())
    layers.append(td.desc[compressed])
    config = td.gen_config({"architecture": "amd64", "os": "linux"}, [*config_layers, uncompressed], GenOpts())
    td.gen_manifest(td.desc[config], layers, GenOpts(tag="non-distributable-image"))
