"""Interop with the Go reference registry (CNCF distribution 2.8, /usr/bin/docker-registry): it must accept
tokens from our TokenIssuer and token server, and refuse tokens signed by anyone else."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from secreg.auth.scope import Access
from secreg.auth.server import TokenService
from secreg.auth.tokens import TokenIssuer
from secreg.tls import CertificateFiles, libtrust_kid, load_certificate_chain, load_private_key
from tests.e2e.processes import dying_with_parent

GO_REGISTRY = "/usr/bin/docker-registry"

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class GoRegistry:
    url: str
    client: httpx.Client
    realm: str
    log: Path

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


def start_go_registry(
    workdir: Path, certs: CertificateFiles, realm: str, bundle: Path
) -> Iterator[GoRegistry]:
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}, "delete": {"enabled": True}},
        "http": {
            "addr": f"127.0.0.1:{port}",
            "secret": "interop-test-secret",
            "tls": {"certificate": str(certs.server_cert), "key": str(certs.server_key)},
        },
        "auth": {
            "token": {"realm": realm, "service": "secreg", "issuer": "secreg", "rootcertbundle": str(bundle)}
        },
    }
    config_path = workdir / "config.yml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = workdir / "registry.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            dying_with_parent([GO_REGISTRY, "serve", str(config_path)]),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"https://127.0.0.1:{port}"
    try:
        with httpx.Client(
            base_url=url, verify=ssl.create_default_context(cafile=str(certs.ca_cert)), timeout=30
        ) as client:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"docker-registry exited {process.returncode}:\n{log_path.read_text()}"
                    )
                try:
                    if client.get("/v2/").status_code == 401:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry not ready:\n{log_path.read_text()}")
                time.sleep(0.1)
            yield GoRegistry(url, client, realm, log_path)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


@pytest.fixture()
def token_server(serve_tokens: Callable[..., tuple[str, TokenService, httpx.Client]]) -> str:
    return serve_tokens()[0] + "/auth/token"


@pytest.fixture(params=["ca.crt", "token.crt"])
def go_registry(
    request: pytest.FixtureRequest, tmp_path: Path, certs: CertificateFiles, token_server: str
) -> Iterator[GoRegistry]:
    """The Go registry trusting our CA (tokens verified through x5c) or only token.crt."""
    bundle = certs.ca_cert if request.param == "ca.crt" else certs.token_cert
    yield from start_go_registry(tmp_path, certs, token_server, bundle)


def get_token(registry: GoRegistry, user: str, password: str, scope: str) -> str:
    response = registry.client.get(
        registry.realm, params={"service": "secreg", "scope": scope}, auth=(user, password)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def upload(registry: GoRegistry, path: str, data: bytes, token: str) -> httpx.Response:
    """A monolithic upload: POST ?digest= with the body. Distribution 2.8 ignores the body of that POST
    (single-request uploads came with v3) and answers 202 with an upload URL; the body then goes in one
    PUT ?digest=, which needs the same push access."""
    headers = {**registry.bearer(token), "Content-Type": "application/octet-stream"}
    response = registry.client.post(path, content=data, headers=headers)
    if response.status_code != 202:
        return response
    location = response.headers["location"]
    digest = path.split("digest=", 1)[1]
    separator = "&" if "?" in location else "?"
    return registry.client.put(f"{location}{separator}digest={digest}", content=data, headers=headers)


def challenge_params(response: httpx.Response) -> dict[str, str]:
    header = response.headers["www-authenticate"]
    assert header.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def test_base_route_with_a_token_from_our_server(go_registry: GoRegistry) -> None:
    challenge = challenge_params(go_registry.client.get("/v2/"))
    assert challenge == {"realm": go_registry.realm, "service": "secreg"}
    token = go_registry.client.get(
        challenge["realm"], params={"service": challenge["service"]}, auth=("alice", "alice-password")
    ).json()["token"]
    assert go_registry.client.get("/v2/", headers=go_registry.bearer(token)).status_code == 200


def test_monolithic_blob_upload_and_pull(go_registry: GoRegistry) -> None:
    data = os.urandom(4096)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = f"/v2/alice/interop/blobs/uploads/?digest={digest}"
    challenge = challenge_params(go_registry.client.post(path, content=data))
    assert challenge["scope"] in ("repository:alice/interop:pull,push", "repository:alice/interop:push,pull")
    token = get_token(go_registry, "alice", "alice-password", challenge["scope"])
    response = upload(go_registry, path, data, token)
    assert response.status_code == 201, response.text
    assert response.headers["docker-content-digest"] == digest
    pull = get_token(go_registry, "alice", "alice-password", "repository:alice/interop:pull")
    blob = go_registry.client.get(f"/v2/alice/interop/blobs/{digest}", headers=go_registry.bearer(pull))
    assert blob.status_code == 200 and blob.content == data


def test_downscoped_token_is_insufficient(go_registry: GoRegistry) -> None:
    # bob may not push to alice/...: our server grants nothing, the Go registry asks again.
    token = get_token(go_registry, "bob", "bob-password", "repository:alice/interop:pull,push")
    response = go_registry.client.post("/v2/alice/interop/blobs/uploads/", headers=go_registry.bearer(token))
    assert response.status_code == 401
    assert challenge_params(response)["error"] == "insufficient_scope"


def test_issuer_token_with_push_scope(go_registry: GoRegistry, issuer: TokenIssuer) -> None:
    data = b"made by TokenIssuer directly"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    token = issuer.issue("ci", [Access.repository("team/app", "pull", "push")]).token
    response = upload(go_registry, f"/v2/team/app/blobs/uploads/?digest={digest}", data, token)
    assert response.status_code == 201, response.text


def test_token_signed_by_another_key_is_refused(
    go_registry: GoRegistry, other_certs: CertificateFiles, new_issuer: Callable[..., TokenIssuer]
) -> None:
    forged = (
        new_issuer(other_certs).issue("alice", [Access.repository("alice/interop", "pull", "push")]).token
    )
    response = go_registry.client.post("/v2/alice/interop/blobs/uploads/", headers=go_registry.bearer(forged))
    assert response.status_code == 401
    assert challenge_params(response)["error"] == "invalid_token"


def test_refresh_token_is_refused(go_registry: GoRegistry, issuer: TokenIssuer) -> None:
    response = go_registry.client.get(
        "/v2/", headers=go_registry.bearer(issuer.issue_refresh("alice", "f", "docker"))
    )
    assert response.status_code == 401
    assert challenge_params(response)["error"] == "invalid_token"


def test_expired_token_is_refused(
    go_registry: GoRegistry, certs: CertificateFiles, new_issuer: Callable[..., TokenIssuer]
) -> None:
    old = new_issuer(certs, clock=lambda: time.time() - 3600).issue("alice", []).token
    response = go_registry.client.get("/v2/", headers=go_registry.bearer(old))
    assert response.status_code == 401
    assert challenge_params(response)["error"] == "invalid_token"


def test_kid_alone_is_accepted_with_token_crt_as_bundle(
    tmp_path: Path, certs: CertificateFiles, token_server: str
) -> None:
    """Without x5c the Go registry looks the `kid` up among the bundle's keys by libtrust key ID."""
    key = load_private_key(certs.token_key)
    now = int(time.time())
    claims = {
        "iss": "secreg", "sub": "alice", "aud": "secreg", "exp": now + 300, "nbf": now, "iat": now,
        "access": [{"type": "repository", "name": "alice/kid", "actions": ["pull"]}],
    }  # fmt: skip
    kid = libtrust_kid(key.public_key())
    good = jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})
    bad_kid = jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid[:-4] + "AAAA"})
    for registry in start_go_registry(tmp_path, certs, token_server, certs.token_cert):
        assert registry.client.get("/v2/", headers=registry.bearer(good)).status_code == 200
        refused = registry.client.get("/v2/", headers=registry.bearer(bad_kid))
        assert refused.status_code == 401 and challenge_params(refused)["error"] == "invalid_token"


def test_x5c_chain_is_what_the_ca_bundle_trusts(certs: CertificateFiles, issuer: TokenIssuer) -> None:
    header = jwt.get_unverified_header(issuer.issue("a", []).token)
    chain = [base64.b64decode(c) for c in header["x5c"]]
    token_cert = load_certificate_chain(certs.token_cert)[0]
    ca_cert = load_certificate_chain(certs.ca_cert)[0]
    assert chain[0] == token_cert.public_bytes(serialization.Encoding.DER)
    token_cert.verify_directly_issued_by(ca_cert)
