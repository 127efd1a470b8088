"""A registry with auth on, a policy with public, personal and admin-only repositories, and helpers to log
in to the UI, read CSRF tokens and push content through the registry API with a bearer token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import RunningServer, run_secreg, token

POLICY = """\
rules:
  - account: group:admins
    repository: "**"
    actions: ["*"]
    catalog: true
  - account: "*"
    repository: "${user}/**"
    actions: ["*"]
  - account: anonymous
    repository: "public/**"
    actions: [pull]
"""
DEV_PASSWORD = "dev-password-123"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def write_policy(workdir: Path) -> None:
    auth = workdir / "auth"
    auth.mkdir(mode=0o700, parents=True, exist_ok=True)
    (auth / "policy.yaml").write_text(POLICY)


def add_user(workdir: Path, name: str, password: str, *groups: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    extra = [a for g in groups for a in ("--group", g)]
    subprocess.run([sys.executable, "-m", "secreg", "user", "add", name, "--password-stdin", *extra,
                    "--auth-dir", str(workdir / "auth")], input=password, text=True, check=True,
                   capture_output=True, env=env)


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("ui-registry")
    write_policy(workdir)
    with run_secreg(workdir, {"storage": {"delete": {"enabled": True}}, "gc": {"grace": 0}}) as server:
        add_user(workdir, "dev", DEV_PASSWORD)
        yield server


def api_client(server: RunningServer, user: str, password: str, *names: str) -> httpx.Client:
    """A registry API client with pull, push and delete on `names`."""
    bearer = token(server, user, password, *[f"repository:{n}:pull,push,delete" for n in names])
    return server.client(headers={"Authorization": f"Bearer {bearer}"})


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, html[:2000]
    return match.group(1)


def ui_login(client: httpx.Client, user: str, password: str) -> httpx.Response:
    page = client.get("/ui/login")
    return client.post("/ui/login", data={"csrf": csrf_of(page.text), "username": user, "password": password,
                                          "next": "/ui/"})
