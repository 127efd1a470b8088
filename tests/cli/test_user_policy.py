"""`secreg user ...` and `secreg policy ...`."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from secreg.auth.groups import GroupStore
from secreg.auth.policy import DEFAULT_POLICY
from secreg.auth.users import UserStore
from secreg.cli.main import main


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("SECREG_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield


def run(
    args: list[str], stdin: str = "", tty: bool = False, monkeypatch: pytest.MonkeyPatch | None = None
) -> int:
    stream = io.StringIO(stdin)
    stream.isatty = lambda: tty  # type: ignore[method-assign]
    old = sys.stdin
    sys.stdin = stream
    try:
        return main(args)
    finally:
        sys.stdin = old


def users(tmp_path: Path) -> UserStore:
    return UserStore(tmp_path / "auth" / "htpasswd")


def test_add_with_password_stdin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["user", "add", "alice", "--password-stdin"], "alice-secret\n") == 0
    out = capsys.readouterr()
    assert "created user alice" in out.out
    assert "alice-secret" not in out.out + out.err
    assert users(tmp_path).verify("alice", "alice-secret")
    # Apache's htpasswd agrees.
    check = subprocess.run(
        ["htpasswd", "-vb", str(tmp_path / "auth" / "htpasswd"), "alice", "alice-secret"],
        check=False,
        capture_output=True,
    )
    assert check.returncode == 0
    assert oct((tmp_path / "auth").stat().st_mode & 0o777) == "0o700"


def test_add_generate_prints_the_password_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["user", "add", "bob", "--generate", "--group", "ci", "--group", "dev"]) == 0
    out = capsys.readouterr().out
    password = out.split("password (shown only this once): ")[1].strip()
    assert out.count(password) == 1
    assert users(tmp_path).verify("bob", password)
    assert GroupStore(tmp_path / "auth" / "groups").groups_of("bob") == {"ci", "dev"}


def test_add_prompts_twice_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter(["typed-secret", "typed-secret", "one-secret", "another-secret"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    assert run(["user", "add", "carol"], tty=True) == 0
    assert prompts == ["Password: ", "Repeat password: "]
    assert users(tmp_path).verify("carol", "typed-secret")
    assert run(["user", "add", "dave"], tty=True) == 2
    assert "do not match" in capsys.readouterr().err
    assert "dave" not in users(tmp_path)


def test_no_terminal_and_no_flag_says_which_flag_to_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["user", "add", "alice"]) == 2
    err = capsys.readouterr().err
    assert "--password-stdin" in err and "--generate" in err
    assert not (tmp_path / "auth" / "htpasswd").exists()


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["user", "add", "Alice", "--generate"], "", "invalid user name"),
        (["user", "add", "a:b", "--generate"], "", "invalid user name"),
        (["user", "add", "anonymous", "--generate"], "", "reserved"),
        (["user", "add", "alice", "--password-stdin"], "short\n", "too short"),
        (["user", "add", "alice", "--password-stdin"], "x" * 80 + "\n", "too long"),
        (["user", "add", "alice", "--generate", "--group", "bad group"], "", "invalid group name"),
        (["user", "passwd", "ghost", "--generate"], "", "no user 'ghost'"),
        (["user", "del", "ghost"], "", "no user 'ghost'"),
        (["user", "groups", "ghost", "--add", "x"], "", "no user 'ghost'"),
    ],
)
def test_user_errors(args: list[str], stdin: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(args, stdin) == 2
    assert message in capsys.readouterr().err


def test_add_existing_user_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["user", "add", "alice", "--password-stdin"], "alice-secret\n") == 0
    assert run(["user", "add", "alice", "--password-stdin"], "other-secret\n") == 2
    assert "already exists" in capsys.readouterr().err


def test_passwd_del_list_groups(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["user", "add", "alice", "--password-stdin", "--group", "admins"], "alice-secret\n") == 0
    assert run(["user", "add", "bob", "--password-stdin"], "bob-secret\n") == 0
    fingerprint = users(tmp_path).fingerprint("alice")
    assert run(["user", "passwd", "alice", "--password-stdin"], "new-alice-secret\r\n") == 0
    assert users(tmp_path).verify("alice", "new-alice-secret")
    assert users(tmp_path).fingerprint("alice") != fingerprint
    assert run(["user", "groups", "bob", "--add", "ci", "--add", "dev", "--remove", "nothing"]) == 0
    assert run(["user", "groups", "bob", "--remove", "dev"]) == 0
    capsys.readouterr()
    assert run(["user", "list"]) == 0
    listing = capsys.readouterr().out
    assert listing.splitlines() == ["alice  admins", "bob    ci"]
    assert "$2y$" not in listing
    assert run(["user", "del", "alice"]) == 0
    assert "removed from admins" in capsys.readouterr().out
    assert users(tmp_path).users() == ["bob"]
    assert "alice" not in (tmp_path / "auth" / "groups").read_text()


def test_auth_dir_and_config(tmp_path: Path) -> None:
    assert run(["user", "add", "alice", "--generate", "--auth-dir", str(tmp_path / "other")]) == 0
    assert UserStore(tmp_path / "other" / "htpasswd").users() == ["alice"]
    config = tmp_path / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {"auth": {"directory": str(tmp_path / "from-config"), "htpasswd": str(tmp_path / "pw")}}
        )
    )
    assert run(["user", "add", "bob", "--generate", "--group", "g", "--config", str(config)]) == 0
    assert UserStore(tmp_path / "pw").users() == ["bob"]
    assert GroupStore(tmp_path / "from-config" / "groups").groups_of("bob") == {"g"}


def test_bad_config_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["user", "list", "--config", str(tmp_path / "missing.yml")]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_real_process_without_terminal(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    base = [sys.executable, "-m", "secreg", "user", "add", "alice", "--auth-dir", str(tmp_path / "auth")]
    refused = subprocess.run(
        base, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60
    )
    assert refused.returncode == 2 and "--password-stdin" in refused.stderr
    done = subprocess.run(
        [*base, "--password-stdin"],
        check=False,
        input="piped-secret\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "piped-secret" not in done.stdout + done.stderr
    assert UserStore(tmp_path / "auth" / "htpasswd").verify("alice", "piped-secret")


# --- secreg policy -------------------------------------------------------------------------------------


@pytest.fixture()
def policy_dir(tmp_path: Path) -> Path:
    auth = tmp_path / "auth"
    auth.mkdir()
    (auth / "policy.yaml").write_text(DEFAULT_POLICY)
    (auth / "groups").write_text("admins: admin\n")
    return auth


def test_policy_check(policy_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["policy", "check", "alice", "alice/app", "push"]) == 0
    assert "alice may push alice/app? allow: rule 2 (line 18)" in capsys.readouterr().out
    assert run(["policy", "check", "alice", "bob/app", "pull"]) == 1
    assert "deny: no rule grants it" in capsys.readouterr().out
    assert run(["policy", "check", "admin", "bob/app", "delete"]) == 0
    out = capsys.readouterr().out
    assert "admin (groups: admins) may delete bob/app? allow: rule 1" in out
    assert run(["policy", "check", "anonymous", "alice/app", "pull"]) == 1
    assert run(["policy", "check", "admin", "_catalog"]) == 0
    assert "list the catalog? allow" in capsys.readouterr().out
    assert run(["policy", "check", "alice", "_catalog", "--auth-dir", str(policy_dir)]) == 0


def test_policy_show(policy_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["policy", "show"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("2 rule(s); anything not granted is denied")
    assert out[1] == "rule 1 (line 12): account group:admins; repository **; actions *; catalog"
    assert out[2] == "rule 2 (line 18): account *; repository ${user}/**; actions pull,push; catalog"


def test_policy_errors_name_the_line(policy_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (policy_dir / "policy.yaml").write_text("rules:\n  - account: x\n    repository: y\n    actions: [pul]\n")
    assert run(["policy", "show"]) == 2
    assert "line 4: rules[0].actions: unknown action 'pul'" in capsys.readouterr().err
    (policy_dir / "policy.yaml").unlink()
    assert run(["policy", "check", "a", "b", "pull"]) == 2
    assert "missing" in capsys.readouterr().err
