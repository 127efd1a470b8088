"""What secreg writes is safe whatever umask it is started with: under umask 0 (some container runtimes and
service managers) nothing it creates is world-writable, and every file holding a secret is 0600."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

from secreg.workers import ENV as SHARED_DIRECTORY
from tests.server import run_secreg, token, worker_environment
from tests.ui.conftest import csrf_of, ui_login

UMASK_0 = ["sh", "-c", 'umask 000 && exec "$@"', "sh"]
SECRETS = ("ca.key", "server.key", "token.key", "htpasswd", "groups", "ui-session.key", "ui-logouts.json",
           "audit.log")
WRITTEN_BY_THE_TEST = ("config.yml", "server.log")


def _entries(root: Path) -> list[tuple[Path, int]]:
    return [(p, p.lstat().st_mode) for p in root.rglob("*") if p.name not in WRITTEN_BY_THE_TEST]


def test_umask_0_creates_nothing_world_writable_and_secrets_stay_private(tmp_path: Path) -> None:
    config = {"http": {"workers": 2}, "log": {"audit": {"file": str(tmp_path / "logs" / "audit.log")}}}
    with run_secreg(tmp_path, config, wrapper=UMASK_0) as server:
        assert server.admin_password
        bearer = token(server, "admin", server.admin_password, "repository:team/app:pull,push")
        with server.client(headers={"Authorization": f"Bearer {bearer}"}) as client:
            blob = b"a layer"
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            location = client.post("/v2/team/app/blobs/uploads/").headers["location"]
            assert client.put(location, params={"digest": digest}, content=blob).status_code == 201
            assert client.post("/v2/team/app/blobs/uploads/").status_code == 202  # one left open
        with server.client() as client:
            assert client.get("/auth/token", auth=("admin", "wrong")).status_code == 401
            assert ui_login(client, "admin", server.admin_password).status_code == 303
            assert client.post("/ui/logout", data={"csrf": csrf_of(client.get("/ui/").text)}).status_code == 303
        shared = Path(worker_environment(server.process.pid)[SHARED_DIRECTORY])
        assert "open to other local users" not in server.log()
        entries = _entries(tmp_path) + _entries(shared)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    generated = tmp_path / "generated"
    subprocess.run([*UMASK_0, sys.executable, "-m", "secreg", "certs", "generate", "--out", str(generated),
                    "--host", "localhost"], check=True, capture_output=True, env=environment)
    entries += _entries(generated)
    names = {p.name for p, _ in entries}
    assert {"data", "_uploads", "ratelimit.sqlite", *SECRETS} <= names, sorted(names)
    assert [str(p) for p, mode in entries if mode & stat.S_IWOTH and not stat.S_ISLNK(mode)] == []
    assert [(str(p), oct(mode)) for p, mode in entries if p.name in SECRETS and mode & 0o077] == []



def test_secret_files_open_to_others_are_named_at_start(tmp_path: Path) -> None:
    with run_secreg(tmp_path, {"http": {"workers": 1}}) as server:
        assert "open to other local users" not in server.log()
    exposed = [tmp_path / "certs" / "server.key", tmp_path / "certs" / "token.key", tmp_path / "auth" / "htpasswd"]
    for path in exposed:
        path.chmod(0o644)
    (tmp_path / "auth" / "ui-session.key").chmod(0o640)  # group access is the operator's choice (compose)
    upstream = {"name": "hub", "url": "https://127.0.0.1:9", "prefix": "hub", "username": "u",
                "password": "upstream-secret-in-the-file"}
    config = {"http": {"workers": 1}, "metrics": {"token": "metrics-secret-in-the-file"},
              "proxy": {"upstreams": [upstream]}}
    with run_secreg(tmp_path, config) as server:  # run_secreg writes config.yml 0644
        log = server.log()
    warnings = [line for line in log.splitlines() if "holds a secret but is open to other local users" in line]
    assert sorted(w.split(" holds a secret")[0].rsplit(" ", 1)[-1] for w in warnings) == sorted(map(str, exposed))
    assert all("(mode 644): chmod o-rwx" in w for w in warnings)
    assert (f"{tmp_path / 'config.yml'} sets metrics.token, proxy.upstreams[].password but is open to other local "
            "users (mode 644)") in log
    assert "secret-in-the-file" not in log
