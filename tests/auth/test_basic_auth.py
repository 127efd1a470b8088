"""HTTP Basic on the registry API (the classic curl walkthrough), the verified-credentials cache, and logins that
follow `secreg user passwd | del` and policy changes at once: a real `secreg serve` over TLS, the real curl."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.oci import DOCKER_MANIFEST, descriptor, error_code, manifest_bytes, push_blob, sha256
from tests.server import RunningServer, run_secreg, token

CURL = shutil.which("curl")


def _cli(server: RunningServer, *args: str, password: str | None = None) -> None:
    command = [sys.executable, "-m", "secreg", *args, "--auth-dir", str(server.workdir / "auth")]
    if password is not None:
        command.append("--password-stdin")
    subprocess.run(command, input=password, text=True, check=True, capture_output=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # Many failures on purpose below (old passwords): the lockout is tested in test_lockout.py.
    config = {"storage": {"delete": {"enabled": True}}, "auth": {"ratelimit": {"attempts": 100}}}
    with run_secreg(tmp_path_factory.mktemp("basic"), config) as s:
        _cli(s, "user", "add", "alice", password="alice-password")
        _cli(s, "user", "add", "bob", password="bob-password")
        yield s


def _push_docker_image(client: httpx.Client, name: str, tag: str) -> str:
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    layer = b"layer " * 1000
    push_blob(client, name, config)
    push_blob(client, name, layer)
    document = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                "config": descriptor("application/vnd.docker.container.image.v1+json", config),
                "layers": [descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", layer)]}
    r = client.put(f"/v2/{name}/manifests/{tag}", content=manifest_bytes(document),
                   headers={"Content-Type": DOCKER_MANIFEST})
    assert r.status_code == 201, r.text
    return r.headers["Docker-Content-Digest"]


def _curl(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    if CURL is None:
        pytest.fail("curl is not installed (.ci/run installs it)")
    return subprocess.run([CURL, "-sS", "--cacert", str(server.ca), *args], capture_output=True, text=True,
                          timeout=60, check=True)


def test_classic_curl_walkthrough(server: RunningServer) -> None:
    base = server.url
    with server.client(auth=("alice", "alice-password")) as c:  # a push with only -u, no token dance
        digest = _push_docker_image(c, "alice/web", "v1")
    u = ["-u", "alice:alice-password"]
    assert "alice/web" in json.loads(_curl(server, *u, f"{base}/v2/_catalog").stdout)["repositories"]
    assert json.loads(_curl(server, *u, f"{base}/v2/alice/web/tags/list").stdout) == {"name": "alice/web",
                                                                                       "tags": ["v1"]}
    accept = ["-H", f"Accept: {DOCKER_MANIFEST}"]
    head = _curl(server, *u, *accept, "-I", f"{base}/v2/alice/web/manifests/v1").stdout
    assert f"docker-content-digest: {digest}" in head.lower()
    body = _curl(server, *u, *accept, f"{base}/v2/alice/web/manifests/v1").stdout
    assert sha256(body.encode()) == digest
    # The default policy gives users pull and push in their namespace, not delete: 403 says so.
    refused = _curl(server, *u, "-X", "DELETE", "-w", "\n%{http_code}", f"{base}/v2/alice/web/manifests/{digest}")
    text, status = refused.stdout.rsplit("\n", 1)
    assert status == "403" and json.loads(text)["errors"][0]["code"] == "DENIED"
    admin = ["-u", f"admin:{server.admin_password}"]
    deleted = _curl(server, *admin, "-X", "DELETE", "-o", "/dev/null", "-w", "%{http_code}",
                    f"{base}/v2/alice/web/manifests/{digest}")
    assert deleted.stdout == "202"
    assert json.loads(_curl(server, *u, f"{base}/v2/alice/web/tags/list").stdout)["tags"] in ([], None)


def test_basic_refusals(server: RunningServer) -> None:
    with server.client(auth=("alice", "wrong-password")) as c:
        r = c.get("/v2/alice/web/tags/list")
        assert r.status_code == 401 and error_code(r) == "UNAUTHORIZED"
        assert r.headers["WWW-Authenticate"].startswith("Bearer realm=")  # docker's flow is unchanged
        assert "incorrect username or password" in r.text
    with server.client(auth=("bob", "bob-password")) as c:
        r = c.get("/v2/alice/web/tags/list")
        assert r.status_code == 403 and error_code(r) == "DENIED"
        assert c.get("/v2/bob/nothing/tags/list").status_code == 404  # own namespace: simply unknown
    with server.client(headers={"Authorization": "Basic Og=="}) as c:  # dockerd's "nobody logged in"
        assert c.get("/v2/alice/web/tags/list").status_code == 401


def test_star_scope_is_everything_the_policy_allows(server: RunningServer) -> None:
    with server.client() as c:
        r = c.get("/auth/token", params={"service": "secreg", "scope": "repository:bob/x:*"},
                  auth=("bob", "bob-password"))
        assert r.status_code == 200
        token = r.json()["token"]
    import jwt

    access = jwt.decode(token, options={"verify_signature": False})["access"]
    assert [(a["name"], sorted(a["actions"])) for a in access] == [("bob/x", ["pull", "push"])]


def _parallel_logins(server: RunningServer, user: str, password: str, n: int = 8) -> list[int]:
    """`n` logins at once (each wrong password costs a full bcrypt check: 8 keep the test in seconds)."""
    def login(_: int) -> int:
        with server.client() as c:
            return c.get("/auth/token", params={"service": "secreg"}, auth=(user, password)).status_code

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(login, range(n)))


def test_old_password_stops_working_at_once(server: RunningServer) -> None:
    _cli(server, "user", "add", "carol", password="carol-old-password")
    assert set(_parallel_logins(server, "carol", "carol-old-password")) == {200}  # and now cached
    with server.client(auth=("carol", "carol-old-password")) as c:
        assert c.get("/v2/carol/x/tags/list").status_code == 404
    _cli(server, "user", "passwd", "carol", password="carol-new-password")
    statuses = _parallel_logins(server, "carol", "carol-old-password")
    assert 200 not in statuses, statuses
    with server.client(auth=("carol", "carol-old-password")) as c:
        assert c.get("/v2/carol/x/tags/list").status_code == 401
    assert set(_parallel_logins(server, "carol", "carol-new-password", 4)) == {200}
    _cli(server, "user", "del", "carol")
    statuses = _parallel_logins(server, "carol", "carol-new-password", 8)
    assert 200 not in statuses, statuses


def test_policy_change_applies_to_the_next_request(server: RunningServer) -> None:
    policy = server.workdir / "auth" / "policy.yaml"
    original = policy.read_text()
    with server.client(auth=("bob", "bob-password")) as c:
        assert c.get("/v2/alice/web/tags/list").status_code == 403
        policy.write_text(original + "  - account: bob\n    repository: alice/**\n    actions: [pull]\n")
        try:
            assert c.get("/v2/alice/web/tags/list").status_code in (200, 404)  # allowed (404: not pushed yet)
        finally:
            policy.write_text(original)
        assert c.get("/v2/alice/web/tags/list").status_code == 403


def test_repeated_basic_token_requests_are_cheap(server: RunningServer) -> None:
    """Reported, not asserted (no timed assertions): the first login pays bcrypt, the next ones the cache."""
    with server.client() as c:
        times = []
        for _ in range(6):
            start = time.perf_counter()
            r = c.get("/auth/token", params={"service": "secreg"}, auth=("bob", "bob-password"))
            times.append(time.perf_counter() - start)
            assert r.status_code == 200
    print(f"GET /auth/token with Basic: first {times[0] * 1000:.1f} ms, then median "
          f"{sorted(times[1:])[2] * 1000:.1f} ms")


def test_mount_without_pull_on_the_source_asks_for_it(server: RunningServer) -> None:
    with server.client(auth=("alice", "alice-password")) as c:
        layer = b"shared layer " * 100
        push_blob(c, "alice/base", layer)

    def bearer(user: str, password: str, *scopes: str) -> str:
        return token(server, user, password, *scopes)

    mount = {"mount": sha256(layer), "from": "alice/base"}
    push_only = bearer("alice", "alice-password", "repository:alice/app:pull,push")
    with server.client(headers={"Authorization": f"Bearer {push_only}"}) as c:
        r = c.post("/v2/alice/app/blobs/uploads/", params=mount)
        assert r.status_code == 401, r.text
        challenge = r.headers["WWW-Authenticate"]
        assert 'scope="repository:alice/app:pull,push repository:alice/base:pull"' in challenge
        assert 'error="insufficient_scope"' in challenge
    both = bearer("alice", "alice-password", "repository:alice/app:pull,push", "repository:alice/base:pull")
    with server.client(headers={"Authorization": f"Bearer {both}"}) as c:
        assert c.post("/v2/alice/app/blobs/uploads/", params=mount).status_code == 201
    # bob may not pull alice/base at all: no token would help, the mount becomes an ordinary upload
    bobs = bearer("bob", "bob-password", "repository:bob/app:pull,push", "repository:alice/base:pull")
    with server.client(headers={"Authorization": f"Bearer {bobs}"}) as c:
        assert c.post("/v2/bob/app/blobs/uploads/", params=mount).status_code == 202


def test_group_change_applies_to_the_next_request(server: RunningServer) -> None:
    with server.client(auth=("bob", "bob-password")) as c:
        assert c.get("/v2/alice/web/tags/list").status_code == 403
        _cli(server, "user", "groups", "bob", "--add", "admins")
        try:
            assert c.get("/v2/alice/web/tags/list").status_code in (200, 404)  # admins may pull everything
        finally:
            _cli(server, "user", "groups", "bob", "--remove", "admins")
        assert c.get("/v2/alice/web/tags/list").status_code == 403
