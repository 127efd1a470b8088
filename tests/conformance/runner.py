"""The newer conformance layout (`conformance/api.go`, `testdata.go`, `run.go`), ported.

`api.go`'s request helpers become functions that assert what its `apiExpect*` options check; where the Go
helper falls back to a less capable API and reports `errRegUnsupported` (a skip in the Go report), these
raise `Unsupported`, so a test that wants every optional feature fails on it. `testdata.go`'s generator
becomes `DataSet`, which builds images, indexes and artifacts the same way (Go's `json.Marshal` field order,
compact, `omitempty` fields left out).
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import io
import itertools
import json
import os
import secrets
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

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


# --- api.go ----------------------------------------------------------------------------------------------

def _verify_digest(response: httpx.Response, dig: str) -> None:
    """`VerifyDigest` with RequireDigestHeader (OCI_API_*_DIGEST_HEADER on)."""
    header = response.headers.get("Docker-Content-Digest")
    assert header, "registry did not return a Docker-Content-Digest header"
    assert header == dig, f"Docker-Content-Digest header value expected {dig}, received {header}"


def _verify_location(client: httpx.Client, location: str | None, body: bytes) -> None:
    """`BlobVerifyLocation`: the Location of a finished upload serves the blob."""
    assert location, "location header missing"
    r = client.get(location)
    assert r.status_code == 200 and r.content == body, f"failed to verify returned location {location}"


def _uploads(repo: str) -> str:
    return f"/v2/{repo}/blobs/uploads/"


def _octet(length: int, **extra: str) -> dict[str, str]:
    return {"Content-Type": MT_OCTET_STREAM, "Content-Length": str(length), **extra}


def blob_delete(client: httpx.Client, repo: str, dig: str) -> None:
    r = client.delete(f"/v2/{repo}/blobs/{dig}")
    assert r.status_code in (202, 404, 405), f"blob delete failed: {r.status_code} {r.text}"
    if r.status_code == 405:
        raise Unsupported(f"registry returned status {r.status_code}")


def blob_get(client: httpx.Client, repo: str, dig: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.get(f"/v2/{repo}/blobs/{dig}", headers=headers)


def blob_get_exists_full(client: httpx.Client, repo: str, dig: str, td: DataSet) -> None:
    r = blob_get(client, repo, dig)
    assert r.status_code == 200, r.text
    body = td.blobs.get(dig)
    if body is not None:
        assert r.content == body, "body contents mismatch"
        assert r.headers["Content-Length"] == str(len(body))
    _verify_digest(r, dig)


def blob_head(client: httpx.Client, repo: str, dig: str) -> httpx.Response:
    return client.head(f"/v2/{repo}/blobs/{dig}")


def blob_head_exists(client: httpx.Client, repo: str, dig: str, td: DataSet) -> None:
    r = blob_head(client, repo, dig)
    assert r.status_code == 200 and r.content == b""
    body = td.blobs.get(dig)
    if body is not None:
        assert r.headers["Content-Length"] == str(len(body))
    _verify_digest(r, dig)


def blob_mount(client: httpx.Client, repo: str, source: str, dig: str, td: DataSet) -> None:
    """Mount from `source` (anonymous when empty); falls back to an upload and raises Unsupported on 202."""
    body = td.blobs[dig]
    params = {"mount": dig, **({"from": source} if source else {})}
    r = client.post(_uploads(repo), params=params)
    assert r.status_code in (201, 202), f"blob post failed: {r.status_code} {r.text}"
    location = r.headers.get("Location")
    assert location, "blob post did not return a location"
    fell_back = r.status_code == 202
    if fell_back:
        r = client.put(location, params={"digest": dig}, content=body, headers=_octet(len(body)))
        assert r.status_code == 201, f"blob put failed: {r.status_code} {r.text}"
        location = r.headers.get("Location")
    _verify_digest(r, dig)
    _verify_location(client, location, body)
    if fell_back:
        raise Unsupported("registry returned status 202, fell back to blob POST+PUT")


def chunk_min_length(client: httpx.Client, repo: str) -> int:
    """What "chunked single" learns: the larger of the suite's minimum and the registry's OCI-Chunk-Min-Length."""
    r = client.post(_uploads(repo), headers={"Content-Length": "0"})
    assert r.status_code == 202
    client.delete(r.headers["Location"])
    header = r.headers.get("OCI-Chunk-Min-Length")
    if header is not None:
        assert header.isdigit(), f"parsing OCI-Chunk-Min-Length size {header!r} failed"
        return max(CHUNK_MIN, int(header))
    return CHUNK_MIN


def blob_patch_chunked(client: httpx.Client, repo: str, dig: str, td: DataSet, *, bad_digest: bool = False,
                       put_last_chunk: bool = False, out_of_order: bool = False) -> str | None:
    """`BlobPatchChunked`: three chunks (at least CHUNK_MIN each), optionally the last one in the closing PUT,
    optionally preceded each by an out-of-order chunk that must get 416 and a GET that recovers the offset.
    Returns the OCI-Chunk-Min-Length the POST advertised."""
    body = td.blobs[dig]
    r = client.post(_uploads(repo), headers={"Content-Length": "0"})
    assert r.status_code == 202, f"blob post failed: {r.status_code}"
    minimum = r.headers.get("OCI-Chunk-Min-Length")
    location = r.headers.get("Location", "")
    chunk = len(body) // 3 + 1
    if minimum is not None:
        assert minimum.isdigit(), f"parsing OCI-Chunk-Min-Length size {minimum!r} failed"
        chunk = max(chunk, int(minimum))
    chunk = min(max(chunk, CHUNK_MIN), len(body))
    last_byte = -1
    final: httpx.Response | None = None
    while last_byte < len(body) - 1:
        if out_of_order:
            assert location, "blob request did not return a location"
            bad_start = last_byte + 1 + chunk
            if bad_start >= len(body):
                bad_start = 0
            bad_last = min(bad_start + chunk - 1, len(body) - 1)
            as_put = put_last_chunk and bad_last == len(body) - 1
            r = client.request("PUT" if as_put else "PATCH", location, params={"digest": dig} if as_put else None,
                               content=body[bad_start : bad_last + 1],
                               headers=_octet(bad_last - bad_start + 1, **{"Content-Range": f"{bad_start}-{bad_last}"}))
            assert r.status_code == 416, f"blob out of order chunk: {r.status_code} {r.text}"
            # Recover with a GET to the same URL, which names the location and range to continue from.
            r = client.get(location)
            assert r.status_code == 204, f"blob chunked upload get request: {r.status_code}"
            location = r.headers.get("Location") or location
            range_header = r.headers.get("Range", "")
            assert range_header.startswith("0-"), f"content-range header is missing the 0- prefix: {range_header!r}"
            if last_byte >= 0:
                assert int(range_header[2:]) == last_byte, f"range {range_header!r}, expected 0-{last_byte}"
        assert location, "blob request did not return a location"
        start = last_byte + 1
        last_byte = min(start + chunk - 1, len(body) - 1)
        headers = _octet(last_byte - start + 1, **{"Content-Range": f"{start}-{last_byte}"})
        if put_last_chunk and last_byte == len(body) - 1:
            r = client.put(location, params={"digest": dig}, content=body[start : last_byte + 1], headers=headers)
            assert r.status_code == (400 if bad_digest else 201), f"blob patch failed: {r.status_code} {r.text}"
            final = r
        else:
            r = client.patch(location, content=body[start : last_byte + 1], headers=headers)
            assert r.status_code == 202, f"blob patch failed: {r.status_code} {r.text}"
            location = r.headers.get("Location", "")
    if not put_last_chunk or final is None:
        assert location, "blob patch did not return a location"
        r = client.put(location, params={"digest": dig}, headers=_octet(0))
        assert r.status_code == (400 if bad_digest else 201), f"blob put failed: {r.status_code} {r.text}"
        final = r
    if not bad_digest:
        _verify_digest(final, dig)
        _verify_location(client, final.headers.get("Location"), body)
    return minimum


def blob_patch_stream(client: httpx.Client, repo: str, dig: str, td: DataSet, *, bad_digest: bool = False) -> None:
    """`BlobPatchStream`: one PATCH without Content-Range or Content-Length (chunked encoding), then PUT."""
    body = td.blobs[dig]
    r = client.post(_uploads(repo), headers={"Content-Length": "0"})
    assert r.status_code == 202 and r.headers.get("Location"), "blob post did not return a location"
    r = client.patch(r.headers["Location"], content=iter([body]), headers={"Content-Type": MT_OCTET_STREAM})
    assert r.status_code == 202 and r.headers.get("Location"), f"blob patch failed: {r.status_code} {r.text}"
    r = client.put(r.headers["Location"], params={"digest": dig}, headers=_octet(0))
    if bad_digest:
        assert r.status_code == 400, f"blob put: {r.status_code}"
        return
    assert r.status_code == 201 and r.headers.get("Location"), f"blob put failed: {r.status_code} {r.text}"
    _verify_digest(r, dig)
    _verify_location(client, r.headers["Location"], body)


def blob_post_cancel(client: httpx.Client, repo: str) -> None:
    r = client.post(_uploads(repo))
    assert r.status_code == 202 and r.headers.get("Location"), "blob post did not return a location"
    r = client.delete(r.headers["Location"], headers={"Content-Length": "0"})
    assert r.status_code == 204, f"blob cancel failed: {r.status_code}"


def blob_post_only(client: httpx.Client, repo: str, dig: str, td: DataSet, *, bad_digest: bool = False) -> None:
    """`BlobPostOnly`: the whole blob in `POST ?digest=`; a 202 falls back to PUT and raises Unsupported."""
    body = td.blobs[dig]
    r = client.post(_uploads(repo), params={"digest": dig}, content=body, headers=_octet(len(body)))
    if bad_digest:
        assert r.status_code in (400, 202), f"blob post: {r.status_code}"
    else:
        assert r.status_code in (201, 202) and r.headers.get("Location"), f"blob post failed: {r.status_code}"
    if r.status_code == 202:
        r = client.put(r.headers["Location"], params={"digest": dig}, content=body, headers=_octet(len(body)))
        assert r.status_code == (400 if bad_digest else 201), f"blob put failed: {r.status_code}"
        raise Unsupported("registry does not support content in the POST, fallback to PUT")
    if bad_digest:
        return
    _verify_digest(r, dig)
    _verify_location(client, r.headers["Location"], body)


def blob_post_put(client: httpx.Client, repo: str, dig: str, td: DataSet, *, bad_digest: bool = False) -> None:
    body = td.blobs[dig]
    r = client.post(_uploads(repo))
    assert r.status_code == 202 and r.headers.get("Location"), "blob post did not return a location"
    r = client.put(r.headers["Location"], params={"digest": dig}, content=body, headers=_octet(len(body)))
    if bad_digest:
        assert r.status_code == 400, f"blob put: {r.status_code}"
        return
    assert r.status_code == 201, f"blob put failed: {r.status_code} {r.text}"
    _verify_digest(r, dig)
    _verify_location(client, r.headers.get("Location"), body)


_BLOB_APIS = (blob_post_put, blob_post_only, blob_patch_stream, blob_patch_chunked)
_next_api = itertools.cycle(range(len(_BLOB_APIS)))


def blob_push_any(client: httpx.Client, repo: str, dig: str, td: DataSet) -> None:
    """`TestPushBlobAny`: the Go runner spreads pushes over every upload API; so does this, in turn."""
    api = _BLOB_APIS[next(_next_api)]
    api(client, repo, dig, td)


_ACCEPT = [("Accept", MT_OCI_INDEX), ("Accept", MT_OCI_IMAGE)]


def manifest_delete(client: httpx.Client, repo: str, reference: str) -> None:
    r = client.delete(f"/v2/{repo}/manifests/{reference}")
    assert r.status_code in (202, 404, 400, 405), f"manifest delete failed: {r.status_code} {r.text}"
    if r.status_code in (400, 405):
        raise Unsupported(f"registry returned status {r.status_code}")


def manifest_get(client: httpx.Client, repo: str, reference: str) -> httpx.Response:
    return client.get(f"/v2/{repo}/manifests/{reference}", headers=_ACCEPT)


def manifest_head(client: httpx.Client, repo: str, reference: str) -> httpx.Response:
    return client.head(f"/v2/{repo}/manifests/{reference}", headers=_ACCEPT)


def manifest_get_exists(client: httpx.Client, repo: str, reference: str, dig: str, td: DataSet) -> None:
    r = manifest_get(client, repo, reference)
    assert r.status_code == 200, f"manifest get failed: {r.status_code} {r.text}"
    body = td.manifests[dig]
    assert r.content == body, "body contents mismatch"
    assert r.headers["Content-Type"] == detect_media_type(body)
    assert r.headers["Content-Length"] == str(len(body))
    _verify_digest(r, dig)


def manifest_head_exists(client: httpx.Client, repo: str, reference: str, dig: str, td: DataSet) -> None:
    r = manifest_head(client, repo, reference)
    assert r.status_code == 200 and r.content == b"", f"manifest head failed: {r.status_code}"
    body = td.manifests[dig]
    assert r.headers["Content-Type"] == detect_media_type(body)
    assert r.headers["Content-Length"] == str(len(body))
    _verify_digest(r, dig)


def manifest_put(client: httpx.Client, repo: str, reference: str, dig: str, td: DataSet, *,
                 tags: Iterable[str] = (), bad_digest: bool = False) -> httpx.Response:
    """`ManifestPut` with the referrers API on: OCI-Subject when the manifest has a subject, the digest
    header, and a Location that serves the same bytes with the same Content-Type."""
    body = td.manifests[dig]
    media_type = detect_media_type(body)
    r = client.put(f"/v2/{repo}/manifests/{reference}", params=[("tag", t) for t in tags], content=body,
                   headers={"Content-Type": media_type})
    if bad_digest:
        assert r.status_code == 400, f"manifest put: {r.status_code} {r.text}"
        return r
    assert r.status_code == 201, f"manifest put failed: {r.status_code} {r.text}"
    subject = detect_subject(body)
    if subject is not None:
        assert r.headers.get("OCI-Subject") == subject["digest"], "missing or wrong OCI-Subject"
    _verify_digest(r, dig)
    location = r.headers.get("Location")
    assert location, "manifest put did not return a location"
    got = client.get(location, headers=_ACCEPT)
    assert got.status_code == 200 and got.content == body, "failed to verify returned location"
    assert got.headers["Content-Type"] == media_type
    assert got.headers["Content-Length"] == str(len(body))
    return r


def ping(client: httpx.Client) -> None:
    assert client.get("/v2/").status_code == 200


def referrers_list(client: httpx.Client, repo: str, dig: str,
                   artifact_type: str | None = None) -> tuple[dict[str, Any], httpx.Response]:
    params = {"artifactType": artifact_type} if artifact_type is not None else None
    r = client.get(f"/v2/{repo}/referrers/{dig}", params=params)
    assert r.status_code == 200, f"referrers: {r.status_code} {r.text}"
    assert r.headers["Content-Type"] == MT_OCI_INDEX
    index = r.json()
    assert index.get("mediaType") == MT_OCI_INDEX and index.get("schemaVersion") == 2, \
        "referrers response is not a valid OCI index (media type and schema version)"
    return index, r


def tag_list(client: httpx.Client, repo: str, last: str | None = None) -> list[str]:
    """`TagList`: 200 with a listing, or 404 for a repository that does not exist (an empty list here)."""
    r = client.get(f"/v2/{repo}/tags/list", params={"last": last} if last is not None else None)
    assert r.status_code in (200, 404), f"tag list: {r.status_code}"
    return list(r.json()["tags"]) if r.status_code == 200 else []


def referrer_matches(entry: Descriptor, goal: Descriptor) -> bool:
    annotations = entry.get("annotations") or {}
    return (entry.get("digest") == goal["digest"] and entry.get("mediaType") == goal["mediaType"]
            and entry.get("size") == goal["size"] and entry.get("artifactType", "") == goal.get("artifactType", "")
            and all(annotations.get(k) == v for k, v in (goal.get("annotations") or {}).items()))
