"""A token is for the service it names: two registries sharing one token key (one certs directory copied to
staging and production, say) but not `auth.token.service` refuse each other's tokens, and a registry refuses a
token its own token server issued for another issuer."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.server import RunningServer, run_secreg


def _tags(server: RunningServer, bearer: str, name: str) -> int:
    with server.client(headers={"Authorization": f"Bearer {bearer}"}) as client:
        return client.get(f"/v2/{name}/tags/list").status_code


def test_tokens_for_one_service_are_refused_by_another(tmp_path: Path) -> None:
    with run_secreg(tmp_path / "prod", {"http": {"workers": 1}, "auth": {"token": {"service": "prod"}}}) as prod:
        assert prod.admin_password
        for name in ("staging", "other-issuer"):  # the same CA, server and token keys
            shutil.copytree(prod.workdir / "certs", tmp_path / name / "certs")
        staging_config = {"http": {"workers": 1}, "auth": {"token": {"service": "staging"}}}
        with run_secreg(tmp_path / "staging", staging_config) as staging:
            assert staging.admin_password
            with prod.client() as client:
                assert client.get("/auth/token", params={"service": "staging"},
                                  auth=("admin", prod.admin_password)).status_code == 400
            for issuer, verifier, service, password in ((prod, staging, "prod", prod.admin_password),
                                                        (staging, prod, "staging", staging.admin_password)):
                bearer = token_for(issuer, service, password)
                assert _tags(issuer, bearer, "team/app") == 404  # good where issued: simply no such repository
                with verifier.client(headers={"Authorization": f"Bearer {bearer}"}) as client:
                    refused = client.get("/v2/team/app/tags/list")
                assert refused.status_code == 401, service
                assert 'error="invalid_token"' in refused.headers["www-authenticate"]
            # The signature checked out (the key is shared): the audience is what was refused.
            assert "audience" in _denials(staging).lower() and "audience" in _denials(prod).lower()
        other_issuer = {"http": {"workers": 1}, "auth": {"token": {"service": "prod", "issuer": "someone-else"}}}
        with run_secreg(tmp_path / "other-issuer", other_issuer) as foreign:
            assert foreign.admin_password
            assert _tags(prod, token_for(foreign, "prod", foreign.admin_password), "team/app") == 401
        assert "issuer" in _denials(prod).lower()


def _denials(server: RunningServer) -> str:
    return "\n".join(line for line in server.log().splitlines() if "access.denied" in line)


def token_for(server: RunningServer, service: str, password: str) -> str:
    with server.client() as client:
        r = client.get("/auth/token", params={"service": service, "scope": "repository:team/app:pull"},
                       auth=("admin", password))
    assert r.status_code == 200, r.text
    return str(r.json()["token"])
