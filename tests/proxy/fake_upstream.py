"""A small hostile upstream over TLS: serves an image whose layer bytes do not match their digest, or 503 for
everything. Counts what it was asked."""

from __future__ import annotations

import contextlib
import hashlib
import json
import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from secreg.tls import generate_certificates
from tests.oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST


@dataclass
class FakeUpstream:
    url: str
    ca: Path
    manifest: bytes
    manifest_digest: str
    layer_digest: str
    layer_size: int
    mode: list[str]  # ["corrupt"] or ["unavailable"]; a list so a test can switch it
    requests: Counter[str] = field(default_factory=Counter)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def fake_upstream(workdir: Path, layer_size: int = 3 * 1024 * 1024) -> Iterator[FakeUpstream]:
    certs = generate_certificates(workdir / "certs", ["localhost"], ["127.0.0.1"])
    layer = bytes(range(256)) * (layer_size // 256)
    wrong = bytes(reversed(layer))  # same size, other bytes
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": _sha256(layer), "size": len(layer)}],
    }).encode()
    state = FakeUpstream("", certs.ca_cert, manifest, _sha256(manifest), _sha256(layer), len(layer), ["corrupt"])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, status: int, body: bytes, headers: dict[str, str], head: bool) -> None:
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _serve(self, head: bool) -> None:
            state.requests[f"{self.command} {self.path.split('?')[0]}"] += 1
            if state.mode[0] == "unavailable":
                self._answer(503, b'{"errors":[]}', {"Content-Type": "application/json"}, head)
                return
            path = self.path.split("?")[0]
            if path == "/v2/":
                self._answer(200, b"{}", {}, head)
            elif "/manifests/" in path:
                self._answer(200, manifest, {"Content-Type": OCI_MANIFEST,
                                             "Docker-Content-Digest": state.manifest_digest}, head)
            elif path.endswith(state.layer_digest):
                self._answer(200, wrong, {"Docker-Content-Digest": state.layer_digest}, head)
            elif path.endswith(_sha256(config)):
                self._answer(200, config, {}, head)
            else:
                self._answer(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}', {"Content-Type": "application/json"},
                             head)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._serve(False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(True)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
