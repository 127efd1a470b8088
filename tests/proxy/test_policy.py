"""Policy on a caching secreg with token auth: a pull through a cache prefix needs pull on that local name,
decided before any request leaves for the upstream; pushes into a prefix are refused even to admins; the
catalog marks cache repositories."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.auth.test_auth_registry import add_user, admin_token, authed, token
from tests.server import RunningServer, run_secreg

from .test_pull import ACCEPT, proxy_config, upstream_entry
from .upstreams import Pusher, Upstream, random_bytes

POLICY = """\
rules:
  - account: group:admins
    repository: "**"
    actions: ["*"]
    catalog: true
  - account: alice
    repository: "go/allowed/**"
    actions: [pull]
"""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, go_hub: Upstream) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("guarded")
    (workdir / "auth").mkdir()
    (workdir / "auth" / "policy.yaml").write_text(POLICY)
    with run_secreg(workdir, proxy_config(upstream_entry("go", go_hub, "go"), auth=True)) as server:
        add_user(server, "alice", "alice-password")
        yield server


def test_pull_needs_pull_on_the_local_name(guarded: RunningServer, go_pusher: Pusher, go_hub: Upstream) -> None:
    go_pusher.image("allowed/app", "v1", [random_bytes(3000, seed=61)])
    go_pusher.image("secret/app", "v1", [random_bytes(3000, seed=62)])
    bearer = token(guarded, "alice", "alice-password", "repository:go/allowed/app:pull",
                   "repository:go/secret/app:pull")
    with authed(guarded, bearer) as client:
        assert client.get("/v2/go/allowed/app/manifests/v1", headers=ACCEPT).status_code == 200
        before = go_hub.requests_to("HEAD", "/v2/secret/app/") + go_hub.requests_to("GET", "/v2/secret/app/")
        refused = client.get("/v2/go/secret/app/manifests/v1", headers=ACCEPT)
        assert refused.status_code in (401, 403), refused.text
        after = go_hub.requests_to("HEAD", "/v2/secret/app/") + go_hub.requests_to("GET", "/v2/secret/app/")
        assert after == before


def test_pushes_into_the_prefix_are_refused_even_to_admins(guarded: RunningServer) -> None:
    bearer = admin_token(guarded, "repository:go/mine:pull,push", "repository:mine/app:pull,push")
    with authed(guarded, bearer) as client:
        r = client.post("/v2/go/mine/blobs/uploads/")
        assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
        assert "pull-through cache of go" in r.json()["errors"][0]["message"]
        assert client.post("/v2/mine/app/blobs/uploads/").status_code == 202


def test_catalog_marks_cache_repositories(guarded: RunningServer, go_hub: Upstream) -> None:
    with authed(guarded, admin_token(guarded, "registry:catalog:*")) as client:
        document = client.get("/v2/_catalog").json()
    assert "go/allowed/app" in document["repositories"]
    assert document["cached"]["go/allowed/app"] == "go"
    assert "mine/app" not in document.get("cached", {})
    assert go_hub.password not in str(document)
