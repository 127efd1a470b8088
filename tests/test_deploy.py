"""Deployment files: Dockerfile, .dockerignore, deploy/config.yml, compose.yaml, and the split roles they rely on.

The image cannot be built here (no Docker Hub), so the Dockerfile is checked instruction by instruction and
its healthcheck command is run against a real server. compose.yaml goes through Debian's `docker-compose
config`. The two-service layout is proven by running `secreg serve --role auth` and `--role registry` as two
processes sharing certificates and the auth directory, as the compose services do.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from secreg.config import load_settings
from secreg.tls import generate_certificates
from tests.e2e.harness import ci_mode
from tests.oci import image_manifest, push_blob, sha256
from tests.server import RunningServer, run_secreg

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_HOST = "registry.example.com"


def _unavailable(reason: str) -> NoReturn:
    """Skip outside CI; fail in CI, where .ci/run installs every tool a test needs."""
    if ci_mode():
        pytest.fail(f"{reason} (CI is set: failing instead of skipping)", pytrace=False)
    pytest.skip(reason)


# --- Dockerfile ------------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, backslash continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction is dropped by docker as well
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions((ROOT / "Dockerfile").read_text())


def _only(instructions: list[tuple[str, str]], keyword: str) -> str:
    found = [args for key, args in instructions if key == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (key, _) in enumerate(instructions) if key == "FROM")
    return instructions[last_from:]


def test_dockerfile_takes_the_base_image_as_a_build_argument(dockerfile: list[tuple[str, str]]) -> None:
    assert dockerfile[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    stages = [args for key, args in dockerfile if key == "FROM"]
    assert stages and all(args.split()[0] == "${BASE_IMAGE}" for args in stages), stages


def test_dockerfile_runs_secreg_as_a_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    final = _final_stage(dockerfile)
    users = [args for key, args in final if key == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    run = " ".join(args for key, args in final if key == "RUN")
    assert "useradd" in run and '--uid "${SECREG_UID}"' in run
    assert ("ARG", "SECREG_UID=10001") in final
    assert "chown secreg:secreg /var/lib/secreg /certs /auth" in run


def test_dockerfile_entrypoint_command_config_and_mounts(dockerfile: list[tuple[str, str]]) -> None:
    final = _final_stage(dockerfile)
    assert json.loads(_only(final, "ENTRYPOINT")) == ["secreg"]
    assert json.loads(_only(final, "CMD")) == ["serve", "--config", "/etc/secreg/config.yml"]
    assert _only(final, "EXPOSE") == "5000"
    assert json.loads(_only(final, "VOLUME")) == ["/var/lib/secreg"]
    assert ("COPY", "deploy/config.yml /etc/secreg/config.yml") in final
    assert ("COPY", "--from=build /opt/secreg /opt/secreg") in final
    assert _only(final, "WORKDIR") == "/"  # so the CLI's ./certs and ./auth are the mounts


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies(dockerfile: list[tuple[str, str]]) -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied: set[str] = set()
    for key, args in dockerfile:
        if key == "COPY" and not args.startswith("--from"):
            copied.update(part.rstrip("/") for part in args.split()[:-1])
    assert copied == allowed == {"pyproject.toml", "README.md", "secreg", "deploy/config.yml"}
    for path in copied:
        assert (ROOT / path).exists(), path


def test_default_config_in_the_image(tmp_path: Path) -> None:
    settings = load_settings(ROOT / "deploy" / "config.yml", environ={}, base_dir=tmp_path)
    assert (settings.host, settings.port) == ("0.0.0.0", 5000)
    assert settings.storage_root == Path("/var/lib/secreg")
    assert settings.tls.directory == Path("/certs")
    assert settings.tls.certificate == Path("/certs/server.crt")
    assert settings.auth.enabled and settings.auth.directory == Path("/auth")
    assert settings.auth.token.key == Path("/certs/token.key")
    assert not settings.tls.autogenerate
    realm = "https://registry.example.com:5001/auth/token"
    split = load_settings(ROOT / "deploy" / "config.yml", environ={"SECREG_AUTH_TOKEN_REALM": realm})
    assert split.auth.token.realm == realm


def _healthcheck_code(test: list[str]) -> str:
    assert test[:3] == ["CMD", "python3", "-c"], test
    return test[3]


def _run_healthcheck(code: str, port: int) -> subprocess.CompletedProcess[str]:
    """Run the healthcheck's Python (stdlib only, as in a slim image) against 127.0.0.1:port."""
    assert "https://127.0.0.1:5000/healthz" in code
    code = code.replace("127.0.0.1:5000", f"127.0.0.1:{port}")
    return subprocess.run(
        ["python3", "-I", "-c", code], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture(scope="module")
def healthy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with run_secreg(tmp_path_factory.mktemp("healthcheck")) as server:
        yield server


def test_dockerfile_healthcheck_answers_over_tls(
    dockerfile: list[tuple[str, str]], healthy_server: RunningServer
) -> None:
    healthcheck = _only(_final_stage(dockerfile), "HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    code = _healthcheck_code(["CMD", *json.loads(command)])
    ok = _run_healthcheck(code, healthy_server.port)
    assert ok.returncode == 0, ok.stderr
    healthy_server_down = _run_healthcheck(code, 1)  # nothing listens on port 1
    assert healthy_server_down.returncode != 0


# --- compose.yaml ----------------------------------------------------------------------------------


def _compose_config(workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        _unavailable("docker-compose not found in PATH (Debian package docker-compose)")
    # A copy in a directory of its own: no .env of the developer's is read.
    shutil.copy(ROOT / "compose.yaml", workdir / "compose.yaml")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SECREG_", "COMPOSE_"))}
    environment.update(env)
    return subprocess.run(
        [binary, "config"], cwd=workdir, env=environment, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("compose")
    result = _compose_config(workdir, {"SECREG_PUBLIC_HOST": PUBLIC_HOST})
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    config["_workdir"] = workdir
    return config


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) from the normalized `volumes` of `docker-compose config`."""
    mounts = {}
    for entry in service["volumes"]:
        source, target, *mode = entry.split(":")
        mounts[target] = (source, mode[0] if mode else "rw")
    return mounts


def test_compose_has_a_registry_and_an_auth_service_from_one_image(compose: dict[str, Any]) -> None:
    # Services behind a profile (`scaled`: README "Scaling out") start only when asked for.
    services = {n: s for n, s in compose["services"].items() if not s.get("profiles")}
    assert set(services) == {"registry", "auth"}
    for name, service in services.items():
        assert service["image"] == "secreg:latest"
        assert Path(service["build"]["context"]) == compose["_workdir"]
        assert service["command"] == ["serve", "--config", "/etc/secreg/config.yml", "--role", name]
        assert service["restart"] == "unless-stopped"
        assert "/healthz" in _healthcheck_code(service["healthcheck"]["test"])


def test_compose_ports_mounts_and_realm(compose: dict[str, Any]) -> None:
    registry, auth = compose["services"]["registry"], compose["services"]["auth"]
    assert [(p["published"], p["target"]) for p in registry["ports"]] == [(5000, 5000)]
    assert [(p["published"], p["target"]) for p in auth["ports"]] == [(5001, 5000)]
    assert registry["environment"]["SECREG_AUTH_TOKEN_REALM"] == f"https://{PUBLIC_HOST}:5001/auth/token"

    here = compose["_workdir"]
    assert _mounts(registry) == {
        "/certs": (str(here / "certs"), "ro"),
        "/auth": (str(here / "auth"), "ro"),
        "/var/lib/secreg": ("registry-data", "rw"),
    }
    # The token server writes htpasswd, groups and policy.yaml on first start.
    assert _mounts(auth) == {"/certs": (str(here / "certs"), "ro"), "/auth": (str(here / "auth"), "rw")}
    assert "registry-data" in compose["volumes"]
    assert registry["depends_on"] == {"auth": {"condition": "service_healthy"}}


def test_compose_healthcheck_answers_over_tls(compose: dict[str, Any], healthy_server: RunningServer) -> None:
    code = _healthcheck_code(compose["services"]["registry"]["healthcheck"]["test"])
    result = _run_healthcheck(code, healthy_server.port)
    assert result.returncode == 0, result.stderr


def test_compose_requires_the_public_host(tmp_path: Path) -> None:
    result = _compose_config(tmp_path, {})
    assert result.returncode != 0
    assert "set SECREG_PUBLIC_HOST in .env" in result.stderr
    custom = _compose_config(tmp_path, {"SECREG_PUBLIC_HOST": PUBLIC_HOST, "SECREG_AUTH_PORT": "8443"})
    assert custom.returncode == 0, custom.stderr
    services = yaml.safe_load(custom.stdout)["services"]
    assert services["auth"]["ports"][0]["published"] == 8443
    realm = services["registry"]["environment"]["SECREG_AUTH_TOKEN_REALM"]
    assert realm == f"https://{PUBLIC_HOST}:8443/auth/token"


# --- the two roles as two processes, as compose runs them ------------------------------------------


def _challenge(header: str) -> dict[str, str]:
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer", header
    return dict(re.findall(r'(\w+)="([^"]*)"', rest))


def test_registry_and_auth_roles_in_two_processes(tmp_path: Path) -> None:
    # One certificate directory and one auth directory, like ./certs and ./auth under compose.
    certs = generate_certificates(tmp_path / "shared" / "certs", ["localhost"], ["127.0.0.1"]).directory
    auth_dir = tmp_path / "shared" / "auth"
    shared = {"http": {"tls": {"directory": str(certs), "autogenerate": False}},
              "auth": {"directory": str(auth_dir)}}
    for name in ("auth-role", "registry-role"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "certs").symlink_to(certs)  # where run_secreg looks for ca.crt

    with run_secreg(tmp_path / "auth-role", shared, args=["--role", "auth"]) as auth:
        assert auth.admin_password, auth.log()
        assert (auth_dir / "policy.yaml").exists() and (auth_dir / "htpasswd").exists()
        realm = f"https://127.0.0.1:{auth.port}/auth/token"
        # Set the way compose.yaml sets it: through the environment.
        env = {"SECREG_AUTH_TOKEN_REALM": realm}
        with run_secreg(tmp_path / "registry-role", shared, args=["--role", "registry"], env=env) as registry:
            assert "shown only this once" not in registry.log()  # only the token server bootstraps users
            with registry.client() as reg, auth.client() as tok:
                # Each process serves its half only.
                assert reg.get("/auth/token").status_code == 404
                assert tok.get("/v2/").status_code == 404

                denied = reg.post("/v2/deploy/app/blobs/uploads/")
                assert denied.status_code == 401
                challenge = _challenge(denied.headers["www-authenticate"])
                assert challenge == {"realm": realm, "service": "secreg",
                                     "scope": "repository:deploy/app:pull,push"}

                wrong = tok.get("/auth/token", params={"service": "secreg", "scope": challenge["scope"]},
                                auth=("admin", "wrong-password"))
                assert wrong.status_code == 401

                # What `docker login` does: Basic credentials once, a refresh token kept for later.
                login = tok.get(challenge["realm"].removeprefix(auth.url), auth=("admin", auth.admin_password),
                                params={"service": challenge["service"], "account": "admin",
                                        "client_id": "docker", "offline_token": "true"})
                assert login.status_code == 200, login.text
                refresh = login.json()["refresh_token"]
                # What `docker push` does next: trade the refresh token for a token with the scope.
                issued = tok.post("/auth/token", data={
                    "grant_type": "refresh_token", "refresh_token": refresh, "client_id": "docker",
                    "service": challenge["service"], "scope": challenge["scope"]})
                assert issued.status_code == 200, issued.text
                assert issued.json()["scope"] == "repository:deploy/app:pull,push"
                bearer = {"Authorization": f"Bearer {issued.json()['access_token']}"}

            with registry.client(headers=bearer) as reg:
                config_blob = b'{"architecture":"amd64","os":"linux"}'
                layer = b"a layer pushed through a token from another process" * 1000
                assert push_blob(reg, "deploy/app", layer) == sha256(layer)
                push_blob(reg, "deploy/app", config_blob)
                head = reg.head(f"/v2/deploy/app/blobs/{sha256(layer)}")
                assert head.status_code == 200
                assert int(head.headers["content-length"]) == len(layer)
                manifest = json.dumps(image_manifest(config_blob, [layer])).encode()
                put = reg.put("/v2/deploy/app/manifests/1.0", content=manifest,
                              headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
                assert put.status_code == 201, put.text
                tags = reg.get("/v2/deploy/app/tags/list")
                assert tags.json()["tags"] == ["1.0"]
                # The token carries only what was granted: another repository is refused.
                other = reg.get("/v2/someone/else/tags/list")
                assert other.status_code == 401
                assert 'error="insufficient_scope"' in other.headers["www-authenticate"]


def test_compose_scaled_profile_runs_replicas_on_a_bucket_behind_haproxy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    scaled = {n for n, s in services.items() if "scaled" in s.get("profiles", [])}
    assert scaled == {"redis", "replica", "balancer"}
    # MinIO only with `--profile minio`: the replicas may use any S3 service instead (SECREG_S3_ENDPOINT).
    assert services["objectstore"]["profiles"] == ["minio"]
    replica = services["replica"]
    assert replica["command"] == ["serve", "--config", "/etc/secreg/config.yml", "--role", "registry"]
    assert replica["environment"]["SECREG_STORAGE_S3_REGIONENDPOINT"] == "http://objectstore:9000"
    assert replica["environment"]["SECREG_REDIS_ADDR"] == "redis:6379"
    assert replica["scale"] == 3 and "objectstore" not in replica.get("depends_on", {})
    assert _mounts(replica)["/certs"][1] == "ro" and _mounts(replica)["/auth"][1] == "ro"
    haproxy = (ROOT / "deploy" / "haproxy.cfg").read_text()
    assert "mode tcp" in haproxy and "balance roundrobin" in haproxy and "replica:5000 send-proxy-v2 " in haproxy
    # The replicas read PROXY headers from the balancer's fixed address alone, which it connects from (its only
    # network is the one it shares with them).
    balancer = services["balancer"]
    address = balancer["networks"]["balancing"]["ipv4_address"]
    assert list(balancer["networks"]) == ["balancing"] and set(replica["networks"]) == {"default", "balancing"}
    assert replica["environment"]["SECREG_HTTP_PROXYPROTOCOL"] == f"{address}/32"
    assert ipaddress.ip_address(address) in ipaddress.ip_network(
        compose["networks"]["balancing"]["ipam"]["config"][0]["subnet"])
    checked = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if os.path.exists(checked):  # the syntax, with Docker's resolver unreachable here (checked, not used)
        result = subprocess.run([checked, "-c", "-f", str(ROOT / "deploy" / "haproxy.cfg")],
                                capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_compose_replica_environment_loads_into_s3_and_redis_settings(tmp_path: Path) -> None:
    """What a replica container reads: deploy/config.yml plus the environment compose gives it (resolved by
    `docker-compose config` from a .env pointing at an S3 service outside compose), and the .env itself exported
    into the shell does not stop secreg (its variables are compose's, not settings)."""
    dotenv = {"SECREG_PUBLIC_HOST": PUBLIC_HOST, "SECREG_S3_ENDPOINT": "https://s3.example.internal:8443",
              "SECREG_S3_BUCKET": "images", "SECREG_S3_ACCESSKEY": "ak", "SECREG_S3_SECRETKEY": "sk-secret",
              "SECREG_AUTH_PORT": "5001", "SECREG_UID": "10001"}
    result = _compose_config(tmp_path, dotenv)
    assert result.returncode == 0, result.stderr
    replica = yaml.safe_load(result.stdout)["services"]["replica"]
    environ = {k: str(v) for k, v in replica["environment"].items()}
    settings = load_settings(ROOT / "deploy" / "config.yml", environ={**dotenv, **environ}, base_dir=tmp_path)
    s3 = settings.storage_s3
    assert s3 is not None and (s3.bucket, s3.regionendpoint) == ("images", "https://s3.example.internal:8443")
    assert (s3.accesskey, s3.secretkey) == ("ak", "sk-secret") and "sk-secret" not in repr(s3)
    assert settings.redis is not None and (settings.redis.host, settings.redis.port) == ("redis", 6379)
    assert settings.auth.token.realm == f"https://{PUBLIC_HOST}:5001/auth/token"
    assert settings.auth.directory == Path("/auth") and settings.tls.directory == Path("/certs")
    assert settings.proxy_protocol == (ipaddress.ip_network("172.31.250.10/32"),)
