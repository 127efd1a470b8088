"""The Docker client against a real `secreg serve` with token auth on, over TLS that dockerd really verifies.

secreg listens on [::1]:PORT with certificates from `secreg certs generate --host registry.e2e.test --ip ::1`;
a private dockerd resolves registry.e2e.test to ::1 (only it does), and our CA is trusted only through
/etc/docker/certs.d/registry.e2e.test:PORT. No insecure-registries anywhere: dockerd never verifies TLS for
127.0.0.0/8, which is why the registry is not on 127.0.0.1 here (see harness.py). The token realm comes
from the Host header, https://registry.e2e.test:PORT/auth/token, so dockerd fetches tokens by that name too.

Two registries: `deleting` (storage.delete.enabled) and `keeping` (the default, deletes refused).
Docker's own failure messages are asserted on their key phrases; run with -s to see them in full.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from secreg.cli.main import main as secreg_main
from tests.server import RunningServer, run_secreg

from .harness import (
    CERTS_D,
    STRICT_NAME,
    DockerEngine,
    MiB,
    build_image,
    image_exists,
    image_id,
    push_digest,
    trust_ca,
)

pytestmark = pytest.mark.e2e

# Resolved to ::1 by our dockerd only (a private /etc/hosts); .test is reserved (RFC 2606).
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
)
ALICE_PASSWORD = "alice-e2e-password"
READER_PASSWORD = "reader-e2e-password"
PULL_ONLY_RULE = """
  # Added by test_docker_secreg: a pull-only account for alice's repositories.
  - account: reader
    repository: "alice/**"
    actions: [pull]
"""


@dataclass(frozen=True)
class Registry:
    """A running secreg as docker sees it: registry.e2e.test:PORT."""

    server: RunningServer
    admin_password: str

    @property
    def name(self) -> str:
        return f"{STRICT_NAME}:{self.server.port}"

    def ref(self, repository_tag: str) -> str:
        return f"{self.name}/{repository_tag}"

    def token(self, user: str, password: str, *scopes: str) -> str:
        """A bearer token from the token server, as `docker login` + push would get one."""
        with self.server.client() as client:
            response = client.get(
                "/auth/token", params={"service": "secreg", "scope": list(scopes)}, auth=(user, password)
            )
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    def secreg_cli(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """Run `secreg ARGS --auth-dir <this server's auth dir>` as an operator would; return stdout."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
        result = subprocess.run(
            [sys.executable, "-m", "secreg", *args, "--auth-dir", str(self.server.workdir / "auth")],
            input=input, capture_output=True, text=True, env=env, timeout=60, check=False,
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CA, server certificate (registry.e2e.test and ::1) and token key, made the way an operator would."""
    out = tmp_path_factory.mktemp("secreg-docker") / "certs"
    assert secreg_main(["certs", "generate", "--out", str(out), "--host", STRICT_NAME, "--ip", "::1"]) == 0
    return out


@pytest.fixture(scope="module")
def engine(verifying_engine: DockerEngine) -> DockerEngine:
    return verifying_engine


@contextmanager
def _registry(workdir: Path, certs: Path, config: dict[str, Any]) -> Iterator[Registry]:
    shutil.copytree(certs, workdir / "certs")
    with run_secreg(workdir, config, host="::1") as server:
        assert server.admin_password, f"no admin password in the log:\n{server.log()}"
        registry = Registry(server, server.admin_password)
        with trust_ca(server.ca, registry.name):
            yield registry


@pytest.fixture(scope="module")
def deleting(tmp_path_factory: pytest.TempPathFactory, certs: Path, engine: DockerEngine) -> Iterator[Registry]:
    """Auth on (the default) and storage.delete.enabled."""
    config = {"storage": {"delete": {"enabled": True}}}
    with _registry(tmp_path_factory.mktemp("secreg-deleting"), certs, config) as registry:
        yield registry


@pytest.fixture(scope="module")
def keeping(tmp_path_factory: pytest.TempPathFactory, certs: Path, engine: DockerEngine) -> Iterator[Registry]:
    """Auth on and deletes off: both defaults."""
    with _registry(tmp_path_factory.mktemp("secreg-keeping"), certs, {}) as registry:
        yield registry


@contextmanager
def logged_in(engine: DockerEngine, registry: Registry, user: str, password: str) -> Iterator[None]:
    out = engine.login(registry.name, user, password)
    assert "Login Succeeded" in out.stdout, out.stdout + out.stderr
    try:
        yield
    finally:
        engine.logout(registry.name)


def refused(engine: DockerEngine, *args: str) -> str:
    """Run a docker command that must fail; return (and print) what it wrote to stderr."""
    result = engine.run(*args, check=False)
    assert result.returncode != 0, f"docker {' '.join(args)} succeeded:\n{result.stdout}"
    print(f"\n[docker {args[0]}] {result.stderr.strip()}")
    return result.stderr


@dataclass(frozen=True)
class Pushed:
    ref: str
    image_id: str
    digest: str


@pytest.fixture(scope="module")
def pushed(engine: DockerEngine, deleting: Registry) -> Pushed:
    """A 3-layer image pushed as admin to team/app:1.0 on the deleting registry."""
    ref = deleting.ref("team/app:1.0")
    built = build_image(engine, ref, layers=3, layer_size=MiB, seed=11)
    with logged_in(engine, deleting, "admin", deleting.admin_password):
        out = engine.run("push", ref).stdout
    assert out.count("Pushed") == 3, out
    return Pushed(ref, built, push_digest(out))


def test_push_rmi_pull_round_trip_with_verified_tls(
    engine: DockerEngine, deleting: Registry, pushed: Pushed
) -> None:
    with logged_in(engine, deleting, "admin", deleting.admin_password):
        engine.run("rmi", pushed.ref)
        assert not image_exists(engine, pushed.image_id)
        out = engine.run("pull", pushed.ref).stdout
        assert f"Digest: {pushed.digest}" in out
        assert image_id(engine, pushed.ref) == pushed.image_id

        second = deleting.ref("team/app:1.1")
        engine.run("tag", pushed.ref, second)
        out = engine.run("push", second).stdout
    assert out.count("Layer already exists") == 3, out
    assert push_digest(out) == pushed.digest


def test_another_repository_mounts_the_layers_it_shares(
    engine: DockerEngine, deleting: Registry, pushed: Pushed
) -> None:
    other = deleting.ref("team/other:1.0")
    engine.run("tag", pushed.ref, other)
    with logged_in(engine, deleting, "admin", deleting.admin_password):
        out = engine.run("push", other).stdout
    print(f"\n[docker push {other}]\n{out}")
    reused = out.count("Mounted from team/app") + out.count("Layer already exists")
    assert reused == 3 and "Pushed" not in out, out
    assert push_digest(out) == pushed.digest, (pushed, out)


def test_catalog_and_tags_list_show_what_was_pushed(deleting: Registry, pushed: Pushed) -> None:
    token = deleting.token(
        "admin", deleting.admin_password, "registry:catalog:*", "repository:team/app:pull"
    )
    with deleting.server.client(headers={"Authorization": f"Bearer {token}"}) as client:
        catalog = client.get("/v2/_catalog")
        tags = client.get("/v2/team/app/tags/list")
    assert catalog.status_code == 200, catalog.text
    assert "team/app" in catalog.json()["repositories"]
    assert tags.status_code == 200, tags.text
    assert tags.json()["name"] == "team/app"
    assert "1.0" in tags.json()["tags"]


def test_delete_manifest_by_digest_when_deletes_are_enabled(
    engine: DockerEngine, deleting: Registry
) -> None:
    ref = deleting.ref("team/doomed:1")
    build_image(engine, ref, layers=2, layer_size=MiB, seed=12)
    with logged_in(engine, deleting, "admin", deleting.admin_password):
        digest = push_digest(engine.run("push", ref).stdout)
        engine.run("rmi", ref)

        token = deleting.token("admin", deleting.admin_password, "repository:team/doomed:pull,delete")
        with deleting.server.client(headers={"Authorization": f"Bearer {token}"}) as client:
            deleted = client.delete(f"/v2/team/doomed/manifests/{digest}")
            assert deleted.status_code == 202, deleted.text
            gone = client.get(f"/v2/team/doomed/manifests/{digest}", headers={"Accept": MANIFEST_TYPES})
            assert gone.status_code == 404
            assert gone.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"

        message = refused(engine, "pull", ref)
    assert "manifest unknown" in message or "not found" in message


def test_delete_is_refused_when_deletes_are_disabled(engine: DockerEngine, keeping: Registry) -> None:
    ref = keeping.ref("team/kept:1")
    build_image(engine, ref, layers=2, layer_size=MiB, seed=13)
    with logged_in(engine, keeping, "admin", keeping.admin_password):
        digest = push_digest(engine.run("push", ref).stdout)
    token = keeping.token("admin", keeping.admin_password, "repository:team/kept:pull,delete")
    with keeping.server.client(headers={"Authorization": f"Bearer {token}"}) as client:
        response = client.delete(f"/v2/team/kept/manifests/{digest}")
        assert response.status_code == 405, response.text
        assert response.json()["errors"][0]["code"] == "UNSUPPORTED"
        still = client.get(f"/v2/team/kept/manifests/{digest}", headers={"Accept": MANIFEST_TYPES})
    assert still.status_code == 200


def test_failures_tell_the_user_what_went_wrong(
    engine: DockerEngine, deleting: Registry, pushed: Pushed
) -> None:
    with logged_in(engine, deleting, "admin", deleting.admin_password):
        missing = refused(engine, "pull", deleting.ref("team/app:no-such-tag"))
    assert "manifest unknown" in missing or "not found" in missing

    wrong = engine.run(
        "login", "--username", "admin", "--password-stdin", deleting.name, input="not-the-password", check=False
    )
    print(f"\n[docker login] {wrong.stderr.strip()}")
    assert wrong.returncode != 0
    assert "unauthorized: incorrect username or password" in wrong.stderr

    # Not logged in (the failed login stored nothing). Docker fetches an anonymous token, which the policy
    # leaves empty; the registry answers 401 error="insufficient_scope" and docker turns that into DENIED,
    # as with Docker Hub. ("no basic auth credentials" is what a Basic-auth registry gets instead.)
    anonymous = refused(engine, "push", pushed.ref)
    assert "denied: requested access to the resource is denied" in anonymous


def _token_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def _wait_for_policy(registry: Registry, user: str, password: str, scope: str, timeout: float = 60) -> None:
    """The server re-reads policy.yaml within a second; wait until its token server grants `scope`."""
    deadline = time.monotonic() + timeout
    while True:
        if _token_claims(registry.token(user, password, scope))["access"]:
            return
        assert time.monotonic() < deadline, f"the server never granted {scope} to {user}"
        time.sleep(0.2)


def test_owner_pushes_anonymous_is_refused_pull_only_user_cannot_push(
    engine: DockerEngine, keeping: Registry
) -> None:
    out = keeping.secreg_cli("user", "add", "alice", "--password-stdin", input=ALICE_PASSWORD + "\n")
    assert "created user alice" in out
    keeping.secreg_cli("user", "add", "reader", "--password-stdin", input=READER_PASSWORD + "\n")
    assert keeping.secreg_cli("user", "groups", "reader").strip() == "reader: -"
    policy = keeping.server.workdir / "auth" / "policy.yaml"
    policy.write_text(policy.read_text().rstrip("\n") + "\n" + PULL_ONLY_RULE)
    assert "allow" in keeping.secreg_cli("policy", "check", "reader", "alice/app", "pull")
    assert "deny" in keeping.secreg_cli("policy", "check", "reader", "alice/app", "push", check=False)
    _wait_for_policy(keeping, "reader", READER_PASSWORD, "repository:alice/app:pull")

    ref = keeping.ref("alice/app:1")
    built = build_image(engine, ref, layers=2, layer_size=MiB, seed=14)
    with logged_in(engine, keeping, "alice", ALICE_PASSWORD):
        engine.run("push", ref)
    engine.run("rmi", ref)

    # Anonymous clients get an empty token, so docker says DENIED and suggests logging in.
    anonymous = refused(engine, "pull", ref)
    assert "pull access denied" in anonymous and "may require 'docker login'" in anonymous
    assert not image_exists(engine, ref)

    with logged_in(engine, keeping, "reader", READER_PASSWORD):
        engine.run("pull", ref)
        assert image_id(engine, ref) == built
        second = keeping.ref("alice/app:2")
        engine.run("tag", ref, second)
        denied = refused(engine, "push", second)
    # The token server cut the requested pull,push down to pull; the upload is answered 401
    # error="insufficient_scope", which docker reports as DENIED (plus the body's UNAUTHORIZED message).
    assert "denied: requested access to the resource is denied" in denied


def test_split_roles_as_in_compose_with_the_ca_trusted_for_the_registry_port_only(
    engine: DockerEngine, certs: Path, tmp_path: Path
) -> None:
    """compose.yaml's layout: token server and registry in two processes on two ports, one CA.

    Clients are told to trust the CA for the registry's HOST:PORT only; docker fetches tokens from the
    realm on the other port with the same TLS configuration, so that is enough.
    """
    shutil.copytree(certs, tmp_path / "certs")
    shared = {"http": {"tls": {"directory": str(tmp_path / "certs")}}, "auth": {"directory": str(tmp_path / "auth")}}
    for name in ("auth-role", "registry-role"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "certs").symlink_to(tmp_path / "certs")
    with run_secreg(tmp_path / "auth-role", shared, args=["--role", "auth"], host="::1") as auth:
        assert auth.admin_password, auth.log()
        env = {"SECREG_AUTH_TOKEN_REALM": f"https://{STRICT_NAME}:{auth.port}/auth/token"}
        with run_secreg(
            tmp_path / "registry-role", shared, args=["--role", "registry"], env=env, host="::1"
        ) as server:
            registry = Registry(server, auth.admin_password)
            assert not (CERTS_D / f"{STRICT_NAME}:{auth.port}").exists()
            with trust_ca(server.ca, registry.name):
                ref = registry.ref("split/app:1")
                built = build_image(engine, ref, layers=2, layer_size=MiB, seed=15)
                with logged_in(engine, registry, "admin", auth.admin_password):
                    engine.run("push", ref)
                    engine.run("rmi", ref)
                    engine.run("pull", ref)
                assert image_id(engine, ref) == built
