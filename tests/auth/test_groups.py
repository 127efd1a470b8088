from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from secreg.auth.groups import GroupStore, groups_file, parse_groups, validate_group_name
from secreg.config import load_settings


def test_parse_apache_group_file() -> None:
    groups = parse_groups(b"# comment\nadmins: admin alice\n\n  ci:bot\nempty:\nadmins: carol alice\n")
    assert groups.members == {"admins": ("admin", "alice", "carol"), "ci": ("bot",), "empty": ()}
    assert groups.of("alice") == {"admins"}
    assert groups.of("bot") == {"ci"}
    assert groups.of("nobody") == frozenset()


def test_malformed_line_is_named() -> None:
    with pytest.raises(ValueError, match="groups line 2"):
        parse_groups(b"admins: a\nno colon here\n")
    with pytest.raises(ValueError, match="line 1"):
        parse_groups(b"bad name!: a\n")


def test_add_remove_keep_comments_and_order(tmp_path: Path) -> None:
    path = tmp_path / "groups"
    path.write_text("# who is who\nadmins: admin\n# the CI robots\nci: bot\n")
    groups = GroupStore(path, check_interval=0)
    assert groups.add("alice", "admins")
    assert not groups.add("alice", "admins")
    assert groups.add("alice", "dev")
    assert groups.remove("bot", "ci")
    assert not groups.remove("bot", "ci")
    assert path.read_text() == "# who is who\nadmins: admin alice\n# the CI robots\ndev: alice\n"
    assert groups.groups_of("alice") == {"admins", "dev"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert groups.remove_user("alice") == {"admins", "dev"}
    assert path.read_text() == "# who is who\nadmins: admin\n# the CI robots\n"


def test_new_file_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "groups"
    groups = GroupStore(path, check_interval=0)
    assert groups.members() == {}
    groups.add("admin", "admins")
    assert path.read_text() == "admins: admin\n"
    path.write_text("admins: admin\nops: admin\n")  # edited by hand
    assert groups.groups_of("admin") == {"admins", "ops"}


def test_broken_reload_keeps_last_good(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "groups"
    path.write_text("admins: admin\n")
    groups = GroupStore(path, check_interval=0)
    path.write_text("admins admin\n")
    with caplog.at_level(logging.ERROR, "secreg.auth"):
        assert groups.groups_of("admin") == {"admins"}
    assert "line 1" in caplog.text


def test_group_names() -> None:
    assert validate_group_name("Admins-2") == "Admins-2"
    for bad in ("", "a b", "a:b", "-x", "x" * 65, "ops\n"):
        with pytest.raises(ValueError):
            validate_group_name(bad)


def test_groups_file_lives_in_the_auth_directory(tmp_path: Path) -> None:
    settings = load_settings(None, {"auth": {"directory": str(tmp_path / "a")}}, environ={})
    assert groups_file(settings.auth) == tmp_path / "a" / "groups"
