from __future__ import annotations

import stat
import threading
from pathlib import Path

from secreg.auth.bootstrap import bootstrap_auth
from secreg.auth.groups import GroupStore
from secreg.auth.policy import DEFAULT_POLICY, PolicyStore
from secreg.auth.scope import Access
from secreg.auth.users import UserStore
from secreg.config import Settings, load_settings


def settings_for(auth_dir: Path) -> Settings:
    return load_settings(None, {"auth": {"directory": str(auth_dir)}}, environ={})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_admin_group_and_policy(tmp_path: Path) -> None:
    auth_dir = tmp_path / "auth"
    password = bootstrap_auth(settings_for(auth_dir))
    assert password is not None and len(password) >= 24
    assert mode(auth_dir) == 0o700
    for name in ("htpasswd", "groups", "policy.yaml"):
        assert mode(auth_dir / name) == 0o600, name
    users = UserStore(auth_dir / "htpasswd")
    assert users.users() == ["admin"]
    assert users.verify("admin", password)
    assert (auth_dir / "htpasswd").read_text().startswith("admin:$2y$12$")
    assert GroupStore(auth_dir / "groups").groups_of("admin") == {"admins"}
    assert (auth_dir / "policy.yaml").read_text() == DEFAULT_POLICY
    policy = PolicyStore(auth_dir / "policy.yaml").current
    everything = [
        Access.repository("any/repo", "pull", "push", "delete"),
        Access("registry", "catalog", frozenset({"*"})),
    ]
    assert policy.granted("admin", {"admins"}, everything) == everything


def test_idempotent(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "auth")
    assert bootstrap_auth(settings) is not None
    before = {p.name: p.read_bytes() for p in (tmp_path / "auth").iterdir()}
    assert bootstrap_auth(settings) is None
    assert {p.name: p.read_bytes() for p in (tmp_path / "auth").iterdir()} == before


def test_existing_users_are_left_alone_but_a_missing_policy_is_written(tmp_path: Path) -> None:
    auth_dir = tmp_path / "auth"
    auth_dir.mkdir()
    UserStore(auth_dir / "htpasswd", rounds=4).add("alice", "alice-secret")
    assert bootstrap_auth(settings_for(auth_dir)) is None
    assert UserStore(auth_dir / "htpasswd").users() == ["alice"]
    assert (auth_dir / "policy.yaml").read_text() == DEFAULT_POLICY
    assert not (auth_dir / "groups").exists()


def test_existing_policy_is_kept(tmp_path: Path) -> None:
    auth_dir = tmp_path / "auth"
    auth_dir.mkdir()
    (auth_dir / "policy.yaml").write_text("rules: []\n")
    assert bootstrap_auth(settings_for(auth_dir)) is not None
    assert (auth_dir / "policy.yaml").read_text() == "rules: []\n"


def test_empty_htpasswd_gets_an_admin(tmp_path: Path) -> None:
    auth_dir = tmp_path / "auth"
    auth_dir.mkdir()
    (auth_dir / "htpasswd").write_text("# nobody yet\n")
    password = bootstrap_auth(settings_for(auth_dir))
    assert password and UserStore(auth_dir / "htpasswd").verify("admin", password)
    assert (auth_dir / "htpasswd").read_text().startswith("# nobody yet\nadmin:")


def test_two_workers_starting_together_create_one_admin(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "auth")
    results: list[str | None] = []
    threads = [threading.Thread(target=lambda: results.append(bootstrap_auth(settings))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    passwords = [r for r in results if r]
    assert len(passwords) == 1
    assert UserStore(tmp_path / "auth" / "htpasswd").verify("admin", passwords[0])
    assert (tmp_path / "auth" / "groups").read_text() == "admins: admin\n"


def test_separate_htpasswd_and_policy_paths(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        {
            "auth": {
                "directory": str(tmp_path / "auth"),
                "htpasswd": str(tmp_path / "elsewhere" / "users"),
                "policy": str(tmp_path / "rules" / "policy.yaml"),
            }
        },
        environ={},
    )
    password = bootstrap_auth(settings)
    assert password and UserStore(tmp_path / "elsewhere" / "users").verify("admin", password)
    assert (tmp_path / "rules" / "policy.yaml").exists()
    assert (tmp_path / "auth" / "groups").exists()
