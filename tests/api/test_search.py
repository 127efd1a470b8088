"""`GET /v1/_ping` and `GET /v1/search` (what `docker search` calls) on a real server over TLS.

The Docker engine itself is driven in tests/e2e/test_docker_search.py; here the same requests are made with
httpx: a bearer token for registry:catalog:search (after `docker login`), HTTP Basic (a password only), the
empty `Basic Og==` of a client nobody logged in on, and no header at all.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from secreg.registry.blobs import BlobStore
from secreg.registry.descriptions import Descriptions
from secreg.registry.manifests import ManifestStore
from secreg.storage.filesystem import FilesystemDriver
from tests.auth.test_auth_registry import add_user
from tests.oci import OCI_INDEX, OCI_MANIFEST, descriptor, error_code, image_manifest, push_blob, put_manifest
from tests.server import RunningServer, run_secreg
from tests.server import token as server_token

DESCRIPTION = "org.opencontainers.image.description"
POLICY = """
rules:
  - account: group:admins
    repository: "**"
    actions: ["*"]
    catalog: true
  - account: "*"
    repository: "${user}/**"
    actions: [pull, push]
  - account: [alice, bob]
    catalog: true
  - account: carol
    repository: "alice/**"
    actions: [pull]
  - account: anonymous
    repository: "public/**"
    actions: [pull]
    catalog: true
"""
PASSWORDS = {"alice": "alice-password", "bob": "bob-password", "carol": "carol-password"}
LOCKOUT = 2


def push(client: httpx.Client, name: str, tag: str, *, annotation: str | None = None,
         label: str | None = None, seed: str = "") -> dict[str, Any]:
    """An image whose description is in the manifest's annotations and/or the config's labels."""
    runtime = {"Labels": {DESCRIPTION: label}} if label is not None else {}
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": runtime, "seed": name + seed}).encode()
    layer = f"{name}{seed}-layer".encode() * 50
    push_blob(client, name, config)
    push_blob(client, name, layer)
    extra = {"annotations": {DESCRIPTION: annotation}} if annotation is not None else {}
    document = image_manifest(config, [layer], **extra)
    put_manifest(client, name, tag, document)
    return document


def token(server: RunningServer, user: str | None, *scopes: str) -> str:
    password = PASSWORDS.get(user, server.admin_password or "") if user else None
    return server_token(server, user, password, *scopes)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = {"auth": {"ratelimit": {"attempts": 3, "window": 60, "lockout": LOCKOUT}}}
    with run_secreg(tmp_path_factory.mktemp("search"), config) as running:
        (running.workdir / "auth" / "policy.yaml").write_text(POLICY)
        for user, password in PASSWORDS.items():
            add_user(running, user, password)
        repositories = ["alice/web", "alice/worker", "alice/multi", "alice/plain", "alice/retag", "bob/web",
                        "public/base"]
        admin = token(running, "admin", *[f"repository:{r}:pull,push" for r in repositories])
        with running.client(headers={"Authorization": f"Bearer {admin}"}) as client:
            push(client, "alice/web", "1.0", annotation="Alice's web server", label="not this one")
            push(client, "alice/worker", "1.0", label="Background worker")
            child = push(client, "alice/multi", "amd64", label="one platform")
            child_bytes = json.dumps(child, indent=2).encode()
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                     "manifests": [descriptor(OCI_MANIFEST, child_bytes, platform={"os": "linux",
                                                                                  "architecture": "amd64"})],
                     "annotations": {DESCRIPTION: "Multi-platform image"}}
            put_manifest(client, "alice/multi", "latest", index, OCI_INDEX)
            push(client, "alice/plain", "1.0")
            push(client, "alice/retag", "1", label="old description", seed="old")
            time.sleep(0.05)
            push(client, "alice/retag", "2", label="new description", seed="new")
            push(client, "bob/web", "1.0", annotation="Bob's web server")
            push(client, "public/base", "1.0", annotation="Base image for everyone")
        yield running


def search(server: RunningServer, headers: dict[str, str] | None = None, **params: Any) -> httpx.Response:
    with server.client(headers=headers or {}) as client:
        return client.get("/v1/search", params=params)


def bearer(server: RunningServer, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(server, user, 'registry:catalog:search')}"}


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["name"] for r in response.json()["results"]]


def test_ping_needs_no_credentials(server: RunningServer) -> None:
    with server.client() as client:
        response = client.get("/v1/_ping")
    assert response.status_code == 200
    assert response.json() == {"standalone": True}
    assert response.headers["X-Docker-Registry-Standalone"] == "true"


def test_bearer_search_shows_only_pullable_repositories_with_descriptions(server: RunningServer) -> None:
    response = search(server, bearer(server, "alice"), q="WEB")
    assert response.json() == {
        "query": "WEB", "num_results": 1, "num_pages": 1, "page": 1, "page_size": 25,
        "results": [{"name": "alice/web", "description": "Alice's web server", "star_count": 0,
                     "is_official": False, "is_automated": False}],
    }
    everything = search(server, bearer(server, "alice"))
    described = {r["name"]: r["description"] for r in everything.json()["results"]}
    assert described == {
        "alice/multi": "Multi-platform image",  # the index's annotation (the newest tag is the index)
        "alice/plain": "",
        "alice/retag": "new description",  # the newest tag wins
        "alice/web": "Alice's web server",  # the annotation before the label
        "alice/worker": "Background worker",  # the config's label
        "public/base": "Base image for everyone",  # anonymous rules apply to everyone
    }
    assert names(search(server, bearer(server, "bob"), q="web")) == ["bob/web"]


def test_pagination(server: RunningServer) -> None:
    headers = bearer(server, "alice")
    pages = [search(server, headers, q="alice", n=2, page=p).json() for p in (1, 2, 3, 4)]
    assert [p["num_results"] for p in pages] == [5, 5, 5, 5]
    assert [p["num_pages"] for p in pages] == [3, 3, 3, 3]
    assert [p["page_size"] for p in pages] == [2, 2, 2, 2]
    assert [[r["name"] for r in p["results"]] for p in pages] == [
        ["alice/multi", "alice/plain"], ["alice/retag", "alice/web"], ["alice/worker"], []]
    for params in ({"n": "0"}, {"n": "101"}, {"n": "x"}, {"page": "0"}, {"page": "-1"}):
        refused = search(server, headers, **params)
        assert refused.status_code == 400, params
        assert error_code(refused) == "PAGINATION_NUMBER_INVALID"


def test_a_token_without_the_search_scope_is_challenged_for_it(server: RunningServer) -> None:
    response = search(server, {"Authorization": f"Bearer {token(server, 'alice', 'repository:alice/web:pull')}"})
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert 'scope="registry:catalog:search"' in challenge and 'error="insufficient_scope"' in challenge
    assert '"event": "access.denied", "error": "insufficient_scope", "user": "alice"' in server.log()


def test_basic_credentials_are_checked_like_the_token_endpoint(server: RunningServer) -> None:
    response = search(server, basic("alice", "alice-password"), q="web")
    assert names(response) == ["alice/web"]
    assert '"event": "login.ok", "user": "alice", "client": "127.0.0.1", "via": "search"' in server.log()
    wrong = search(server, basic("alice", "nope"))
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == 'Basic realm="secreg"'
    assert "nope" not in server.log()


@contextmanager
def policy(server: RunningServer, text: str) -> Iterator[None]:
    path = server.workdir / "auth" / "policy.yaml"
    original = path.read_text()
    path.write_text(text)
    time.sleep(1.2)  # the server checks the file at most once a second
    try:
        yield
    finally:
        path.write_text(original)
        time.sleep(1.2)


def test_an_account_the_policy_does_not_let_search_is_refused(server: RunningServer) -> None:
    # Anonymous rules apply to logged-in accounts too: without catalog there, carol has no rule granting it.
    with policy(server, POLICY.replace("    actions: [pull]\n    catalog: true\n", "    actions: [pull]\n")):
        refused = search(server, basic("carol", "carol-password"))
        assert refused.status_code == 403 and error_code(refused) == "DENIED"
        # The token server grants nothing for the scope, so a token carol gets does not pass either.
        assert search(server, bearer(server, "carol")).status_code == 401
        assert search(server).status_code == 401  # nor may anonymous callers search now


def test_anonymous_callers_see_what_anonymous_may_pull(server: RunningServer) -> None:
    for headers in (None, {"Authorization": "Basic Og=="}):  # Og== is ":", what dockerd sends then
        assert names(search(server, headers)) == ["public/base"]
        assert names(search(server, headers, q="alice")) == []
    assert search(server, {"Authorization": "Token abc"}).status_code == 401


def test_failed_basic_logins_share_the_token_endpoints_rate_limit(server: RunningServer) -> None:
    # Three failures lock the account (and the address, which earlier tests' failures count against).
    statuses = [search(server, basic("bob", "wrong-password")).status_code for _ in range(3)]
    assert statuses[0] == 401 and set(statuses) <= {401, 429}
    throttled = search(server, basic("bob", "bob-password"))
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    with server.client() as client:
        assert client.get("/auth/token", params={"service": "secreg"},
                          auth=("bob", "bob-password")).status_code == 429
    time.sleep(LOCKOUT + 0.5)
    assert names(search(server, basic("bob", "bob-password"), q="web")) == ["bob/web"]


def test_without_auth_everything_is_found(open_server: RunningServer) -> None:
    with open_server.client() as client:
        push(client, "search/open", "1", label="open registry")
        response = client.get("/v1/search", params={"q": "search/"})
    assert response.status_code == 200
    assert response.json()["results"] == [{"name": "search/open", "description": "open registry", "star_count": 0,
                                           "is_official": False, "is_automated": False}]


class CountingDriver(FilesystemDriver):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def read_bytes(self, path: str) -> bytes:
        self.reads.append(path)
        return super().read_bytes(path)


def test_descriptions_read_one_manifest_and_one_config_then_come_from_the_cache(
    server: RunningServer, tmp_path: Path
) -> None:
    driver = CountingDriver(server.storage)
    blobs = BlobStore(driver)
    descriptions = Descriptions(driver, ManifestStore(driver, blobs), blobs)
    assert descriptions.of("alice/worker") == "Background worker"
    blob_reads = [p for p in driver.reads if "/blobs/" in p]
    assert len(blob_reads) == 2  # the manifest and the config
    driver.reads.clear()
    assert descriptions.of("alice/worker") == "Background worker"
    assert not [p for p in driver.reads if "/blobs/" in p]
    assert descriptions.of("no/such") == ""
