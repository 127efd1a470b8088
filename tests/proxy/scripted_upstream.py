"""A small scripted upstream over TLS (own CA) with Basic auth, plus a separate "blob host": what a registry
that sends blob downloads to a storage service looks like. What each repository does is chosen by its name:

- `redirect/<x>`: blob GET and HEAD answer 307 to the blob host (`https://localhost:<other port>/...?sig=...`);
- `plain/<x>`: blob requests answer 307 to a plain-HTTP listener (which must never be asked anything);
- `loop/<x>`: blob requests redirect to themselves, forever;
- `slow/<x>`: manifest and tag list GETs are held until `release` is set (concurrent misses must share one);
- `deep/<x>`: the manifest and the tag list are JSON nested 100,000 levels deep (a hostile upstream).

Every request is recorded with whether it carried an Authorization header."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from secreg.tls import generate_certificates
from tests.oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST

USER, PASSWORD = "scripted", "scripted-upstream-secret-41c9"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Seen:
    host: str  # "upstream" | "blobhost" | "plain"
    method: str
    path: str
    authorization: bool


@dataclass(frozen=True)
class Image:
    manifest: bytes
    manifest_digest: str
    config_digest: str
    layer_digest: str
    layer_size: int


@dataclass
class ScriptedUpstream:
    url: str
    ca: Path
    blob_url: str
    plain_url: str
    images: dict[str, Image]  # by mode: every mode has blobs of its own
    release: threading.Event = field(default_factory=threading.Event)
    seen: list[Seen] = field(default_factory=list)

    def count(self, host: str, method: str | None = None, part: str = "", authorized: bool | None = None) -> int:
        return sum(1 for s in list(self.seen)
                   if s.host == host and (method is None or s.method == method) and part in s.path
                   and (authorized is None or s.authorization == authorized))


def _tls_server(handler: type[BaseHTTPRequestHandler], cert: Path, key: Path) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


@contextlib.contextmanager
def scripted_upstream(workdir: Path, layer_size: int = 200_000) -> Iterator[ScriptedUpstream]:
    certs = generate_certificates(workdir / "certs", ["localhost"], ["127.0.0.1"])
    blobs: dict[str, bytes] = {}
    images: dict[str, Image] = {}
    for mode in ("redirect", "plain", "loop", "slow"):
        layer = (mode.encode() + bytes(range(256))) * (layer_size // 256)
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"m": mode}}}).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _sha256(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": _sha256(layer), "size": len(layer)}],
        }).encode()
        blobs.update({_sha256(layer): layer, _sha256(config): config})
        images[mode] = Image(manifest, _sha256(manifest), _sha256(config), _sha256(layer), len(layer))
    state = ScriptedUpstream("", certs.ca_cert, "", "", images)
    expected_auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class Base(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        name = "upstream"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            state.seen.append(Seen(self.name, self.command, self.path, "Authorization" in self.headers))
            self.serve()

        do_HEAD = do_GET  # noqa: N815

        def serve(self) -> None:
            raise NotImplementedError

    class Upstream(Base):
        def serve(self) -> None:
            if self.headers.get("Authorization") != expected_auth:
                self.answer(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                            {"WWW-Authenticate": 'Basic realm="scripted"', "Content-Type": "application/json"})
                return
            path, _, query = self.path.partition("?")
            parts = path.split("/")
            if path == "/v2/":
                self.answer(200, b"{}")
            elif parts[2] == "deep" and ("/manifests/" in path or path.endswith("/tags/list")):
                self.answer(200, b'{"tags": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                            {"Content-Type": OCI_MANIFEST if "/manifests/" in path else "application/json"})
            elif "/manifests/" in path and parts[2] in images:
                if parts[2] == "slow":
                    state.release.wait(timeout=30)
                image = images[parts[2]]
                self.answer(200, image.manifest, {"Content-Type": OCI_MANIFEST,
                                                  "Docker-Content-Digest": image.manifest_digest})
            elif path.endswith("/tags/list") and parts[2] in images:
                if parts[2] == "slow":
                    state.release.wait(timeout=30)
                self.answer(200, json.dumps({"name": "/".join(parts[2:-2]), "tags": ["v1"]}).encode(),
                            {"Content-Type": "application/json"})
            elif "/blobs/" in path and parts[-1] in blobs:
                digest = parts[-1]
                if parts[2] == "redirect":
                    self.answer(307, headers={"Location": f"{state.blob_url}/storage/{digest}?sig=not-for-logs"})
                elif parts[2] == "plain":
                    self.answer(307, headers={"Location": f"{state.plain_url}/storage/{digest}"})
                elif parts[2] == "loop":
                    hop = int(query.removeprefix("hop=") or 0) if query.startswith("hop=") else 0
                    self.answer(307, headers={"Location": f"{path}?hop={hop + 1}"})
                else:
                    self.answer(200, blobs[digest], {"Docker-Content-Digest": digest})
            else:
                self.answer(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}', {"Content-Type": "application/json"})

    class BlobHost(Base):
        name = "blobhost"

        def serve(self) -> None:
            digest = self.path.partition("?")[0].rsplit("/", 1)[-1]
            if digest in blobs:
                self.answer(200, blobs[digest], {"Content-Type": "application/octet-stream"})
            else:
                self.answer(404)

    class Plain(Base):
        name = "plain"

        def serve(self) -> None:
            self.answer(200, blobs.get(self.path.rsplit("/", 1)[-1], b""))

    upstream = _tls_server(Upstream, certs.server_cert, certs.server_key)
    blob_host = _tls_server(BlobHost, certs.server_cert, certs.server_key)
    plain = ThreadingHTTPServer(("127.0.0.1", 0), Plain)
    plain.daemon_threads = True
    state.url = f"https://127.0.0.1:{upstream.server_address[1]}"
    state.blob_url = f"https://localhost:{blob_host.server_address[1]}"
    state.plain_url = f"http://127.0.0.1:{plain.server_address[1]}"
    servers = [upstream, blob_host, plain]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        yield state
    finally:
        state.release.set()
        for server in servers:
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(timeout=10)
