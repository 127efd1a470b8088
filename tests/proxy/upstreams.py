"""Real upstream registries for the pull-through cache tests, each over TLS with its own CA on loopback:
the Go reference registry with htpasswd auth, and a second `secreg serve` with token auth."""

from __future__ import annotations

import contextlib
import json
import os
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import httpx

from secreg.tls import generate_certificates
from tests.e2e.harness import GoRegistry, free_port, start_go_registry
from tests.oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, sha256
from tests.server import RunningServer, run_secreg

UPSTREAM_USER = "mirror"
UPSTREAM_PASSWORD = "mirror-upstream-secret-7f3a"


@dataclass
class Upstream:
    url: str
    ca: Path
    username: str
    password: str
    log_path: Path
    process_holder: Any = None

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=str(self.ca)), timeout=60,
                            **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def requests_to(self, method: str, path_part: str, status: int | None = None) -> int:
        """How many requests the upstream logged for METHOD and a path containing `path_part` (answered
        `status`, when given: 200 counts fetches, not the 401 challenge a worker's first request gets)."""
        # Both access-log formats quote "METHOD PATH..." then the status (the Go registry adds " HTTP/1.1").
        answered = rf'(?: HTTP/[0-9.]+)?" {status} ' if status is not None else '[" ]'
        pattern = re.compile(rf'"{method} [^" ]*{re.escape(path_part)}[^" ]*{answered}')
        return len(pattern.findall(self.log()))


@contextlib.contextmanager
def go_upstream(workdir: Path, extra_config: dict[str, Any] | None = None) -> Iterator[Upstream]:
    """The Go reference registry with htpasswd auth (user UPSTREAM_USER) and a CA of its own."""
    workdir.mkdir(parents=True, exist_ok=True)
    certs = generate_certificates(workdir / "certs", ["localhost"], ["127.0.0.1"])
    htpasswd = workdir / "htpasswd"
    hashed = bcrypt.hashpw(UPSTREAM_PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    htpasswd.write_text(f"{UPSTREAM_USER}:{hashed}\n")
    config: dict[str, Any] = {"auth": {"htpasswd": {"realm": "upstream", "path": str(htpasswd)}},
                              "storage": {"delete": {"enabled": True}}}
    for key, value in (extra_config or {}).items():
        config[key] = value
    with start_go_registry(workdir, free_port(), certs.server_cert, certs.server_key, config,
                           ca_cert=certs.ca_cert) as registry:
        yield Upstream(registry.url, certs.ca_cert, UPSTREAM_USER, UPSTREAM_PASSWORD, registry.log_path,
                       registry)


def go_registry_of(upstream: Upstream) -> GoRegistry:
    registry: GoRegistry = upstream.process_holder
    return registry


@contextlib.contextmanager
def secreg_upstream(workdir: Path) -> Iterator[Upstream]:
    """A second `secreg serve` with token auth; UPSTREAM_USER may pull and push everything."""
    with run_secreg(workdir, {"log": {"accesslog": {"format": "text"}}}) as server:
        _add_user(server, UPSTREAM_USER, UPSTREAM_PASSWORD)
        yield Upstream(server.url, server.ca, UPSTREAM_USER, UPSTREAM_PASSWORD, server.log_path, server)


def _add_user(server: RunningServer, name: str, password: str) -> None:
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "secreg", "user", "add", name, "--password-stdin", "--group", "admins",
                    "--auth-dir", str(server.workdir / "auth")], input=password, text=True, check=True,
                   capture_output=True)


class Pusher:
    """Pushes test images to an upstream as its user, through whatever auth it asks for."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._client = upstream.client()
        self._tokens: dict[str, str] = {}

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, url: str, name: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        token = self._tokens.get(name)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        else:
            headers.pop("Authorization", None)
        response = self._client.request(method, url, headers=headers,
                                        auth=None if token else (self.upstream.username, self.upstream.password),
                                        **kwargs)
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code == 401 and challenge.lower().startswith("bearer"):
            params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
            r = self._client.get(params["realm"], params={"service": params.get("service", ""),
                                                          "scope": f"repository:{name}:pull,push"},
                                 auth=(self.upstream.username, self.upstream.password))
            r.raise_for_status()
            self._tokens[name] = r.json()["token"]
            return self._request(method, url, name, headers=headers, **kwargs)
        return response

    def blob(self, name: str, data: bytes) -> str:
        digest = sha256(data)
        r = self._request("POST", f"/v2/{name}/blobs/uploads/", name)
        assert r.status_code == 202, r.text
        location = r.headers["location"]
        r = self._request("PUT", _with_digest(location, digest), name, content=data,
                          headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        return digest

    def blob_file(self, name: str, path: Path, digest: str) -> None:
        r = self._request("POST", f"/v2/{name}/blobs/uploads/", name)
        assert r.status_code == 202, r.text
        with path.open("rb") as body:
            r = self._request("PUT", _with_digest(r.headers["location"], digest), name, content=body,
                              headers={"Content-Type": "application/octet-stream",
                                       "Content-Length": str(path.stat().st_size)})
        assert r.status_code == 201, r.text

    def manifest(self, name: str, reference: str, content: bytes, media_type: str = OCI_MANIFEST) -> str:
        r = self._request("PUT", f"/v2/{name}/manifests/{reference}", name, content=content,
                          headers={"Content-Type": media_type})
        assert r.status_code == 201, r.text
        return sha256(content)

    def image(self, name: str, tag: str, layers: list[bytes], label: str = "") -> tuple[str, bytes, list[str]]:
        """Push config + layers + manifest; (manifest digest, manifest bytes, layer digests)."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"t": label}},
                             "rootfs": {"type": "layers", "diff_ids": [sha256(x) for x in layers]}}).encode()
        config_digest = self.blob(name, config)
        layer_digests = [self.blob(name, layer) for layer in layers]
        document = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": len(x)} for d, x in zip(layer_digests, layers,
                                                                                           strict=True)],
        }
        content = json.dumps(document).encode()
        return self.manifest(name, tag, content), content, layer_digests


def _with_digest(location: str, digest: str) -> str:
    # The upload URL may carry state in its query (the Go registry's _state): add to it, never replace it.
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


def random_bytes(size: int, seed: int = 0) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


def env_without_secreg() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
