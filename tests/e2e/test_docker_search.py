"""`docker search` through the real Docker CLI and engine against secreg, TLS verified (registry.e2e.test -> ::1).

dockerd 20.10 searches a private registry with the registry-v1 calls `GET /v1/_ping` and
`GET /v1/search?q=TERM&n=25`. After `docker login` (which stores secreg's refresh token as the identity
token) it fetches a bearer token for `registry:catalog:search` first; with only a password stored it sends
HTTP Basic on the search itself. Both are exercised here, and each must show only what the user may pull.
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

import pytest

from secreg.cli.main import main as secreg_main
from tests.server import RunningServer, run_secreg

from .harness import STRICT_NAME, DockerEngine, trust_ca

pytestmark = pytest.mark.e2e

DESCRIPTION = "org.opencontainers.image.description"
PASSWORDS = {"alice": "alice-search-password", "bob": "bob-search-password"}
SEARCH_FORMAT = "{{.Name}}|{{.Description}}|{{.StarCount}}|{{.IsOfficial}}"


@pytest.fixture(scope="module")
def engine(verifying_engine: DockerEngine) -> DockerEngine:
    return verifying_engine


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, engine: DockerEngine) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("search-secreg")
    certs = workdir / "certs"
    assert secreg_main(["certs", "generate", "--out", str(certs), "--host", STRICT_NAME, "--ip", "::1"]) == 0
    with run_secreg(workdir, {}, host="::1") as running:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
        for user, password in PASSWORDS.items():
            subprocess.run(
                [sys.executable, "-m", "secreg", "user", "add", user, "--password-stdin",
                 "--auth-dir", str(workdir / "auth")],
                input=password, text=True, check=True, capture_output=True, env=env,
            )
        with trust_ca(running.ca, f"{STRICT_NAME}:{running.port}"):
            yield running


def registry_name(server: RunningServer) -> str:
    return f"{STRICT_NAME}:{server.port}"


@contextmanager
def logged_in(engine: DockerEngine, server: RunningServer, user: str) -> Iterator[None]:
    out = engine.login(registry_name(server), user, PASSWORDS[user])
    assert "Login Succeeded" in out.stdout, out.stdout + out.stderr
    try:
        yield
    finally:
        engine.logout(registry_name(server))


@contextmanager
def password_only(engine: DockerEngine, server: RunningServer, user: str) -> Iterator[None]:
    """Credentials as a docker config holds them when the login yielded no identity token."""
    config = engine.config_dir / "config.json"
    before = config.read_text()
    encoded = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
    config.write_text(json.dumps({"auths": {registry_name(server): {"auth": encoded}}}))
    try:
        yield
    finally:
        config.write_text(before)


def build_and_push(engine: DockerEngine, ref: str, description: str | None, seed: int) -> None:
    context = engine.build_dir / f"search-{seed}"
    context.mkdir(parents=True)
    try:
        (context / "payload.txt").write_text(f"payload {seed}\n")
        lines = ["FROM scratch", "COPY payload.txt /payload.txt"]
        if description:
            lines.append(f"LABEL {DESCRIPTION}={json.dumps(description)}")
        (context / "Dockerfile").write_text("\n".join(lines) + "\n")
        engine.run("build", "--quiet", "--tag", ref, str(context))
    finally:
        shutil.rmtree(context, ignore_errors=True)
    engine.run("push", ref)


@pytest.fixture(scope="module")
def pushed(engine: DockerEngine, server: RunningServer) -> None:
    name = registry_name(server)
    with logged_in(engine, server, "alice"):
        build_and_push(engine, f"{name}/alice/web:1.0", "Alice's web server", 1)
        build_and_push(engine, f"{name}/alice/worker:1.0", None, 2)
    with logged_in(engine, server, "bob"):
        build_and_push(engine, f"{name}/bob/webapp:1.0", "Bob's web app", 3)


def search(engine: DockerEngine, server: RunningServer, term: str) -> list[list[str]]:
    out = engine.run("search", "--no-trunc", "--format", SEARCH_FORMAT, f"{registry_name(server)}/{term}").stdout
    return sorted(line.split("|") for line in out.splitlines() if line)


def search_requests(server: RunningServer) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith('{"time"')]
    return [line for line in lines if line.get("route") == "/v1/search"]


def test_search_after_docker_login_uses_a_bearer_token(
    engine: DockerEngine, server: RunningServer, pushed: None
) -> None:
    with logged_in(engine, server, "alice"):
        assert "identitytoken" in (engine.config_dir / "config.json").read_text()
        results = search(engine, server, "web")
        everything = search(engine, server, "")
    assert results == [["alice/web", "Alice's web server", "0", ""]]
    assert everything == [["alice/web", "Alice's web server", "0", ""], ["alice/worker", "", "0", ""]]
    last = search_requests(server)[-1]
    assert (last["user"], last["status"]) == ("alice", 200)
    # The engine got its token with the refresh token docker login stored, for exactly this scope.
    tokens = [json.loads(line) for line in server.log().splitlines() if line.startswith('{"time"')]
    assert any(t.get("route") == "/auth/token" and t.get("method") == "POST" and t.get("user") == "alice"
               for t in tokens)


def test_search_with_a_password_only_uses_basic_auth(
    engine: DockerEngine, server: RunningServer, pushed: None
) -> None:
    with password_only(engine, server, "bob"):
        results = search(engine, server, "WEB")
    assert results == [["bob/webapp", "Bob's web app", "0", ""]]
    assert '"event": "login.ok", "user": "bob", "client": "::1", "via": "search"' in server.log()


def test_search_with_a_wrong_password_fails(engine: DockerEngine, server: RunningServer, pushed: None) -> None:
    PASSWORDS["mallory"] = "not-the-password"
    try:
        with password_only(engine, server, "mallory"):
            wrong = engine.run("search", f"{registry_name(server)}/web", check=False)
    finally:
        del PASSWORDS["mallory"]
    assert wrong.returncode != 0
    assert "Unexpected status code 401" in wrong.stderr, wrong.stderr
    assert '"event": "login.failed", "user": "mallory"' in server.log()


def test_anonymous_search_shows_what_the_policy_lets_anonymous_pull(
    engine: DockerEngine, server: RunningServer, pushed: None
) -> None:
    # Not logged in, dockerd still sends `Authorization: Basic Og==` (empty user and password).
    refused = engine.run("search", f"{registry_name(server)}/web", check=False)
    assert refused.returncode != 0
    assert "Unexpected status code 401" in refused.stderr, refused.stderr

    policy = server.workdir / "auth" / "policy.yaml"
    original = policy.read_text()
    rule = '  - account: anonymous\n    repository: "alice/web"\n    actions: [pull]\n    catalog: true\n'
    policy.write_text(original + rule)
    try:
        deadline = time.monotonic() + 60
        while True:  # the server re-reads the policy within a second
            result = engine.run("search", "--no-trunc", "--format", SEARCH_FORMAT,
                                f"{registry_name(server)}/web", check=False)
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["alice/web|Alice's web server|0|"]
    finally:
        policy.write_text(original)
