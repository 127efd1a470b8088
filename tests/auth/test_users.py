from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from secreg.auth.users import UserStore, validate_password, validate_user_name
from secreg.auth.watched import WatchedFile


def htpasswd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["htpasswd", *args], check=False, capture_output=True, text=True, timeout=30)


def test_add_verify_delete(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    users = UserStore(path, rounds=4, check_interval=0)
    assert users.users() == []
    assert users.add("alice", "correct horse")
    assert not users.add("alice", "another password")  # never overwrites
    assert users.users() == ["alice"]
    assert "alice" in users
    assert users.verify("alice", "correct horse")
    assert not users.verify("alice", "correct horsE")
    assert not users.verify("alice", "")
    assert not users.verify("nobody", "correct horse")
    assert path.read_text().startswith("alice:$2y$04$")
    assert users.delete("alice")
    assert not users.delete("alice")
    assert users.users() == []
    assert not users.verify("alice", "correct horse")


def test_file_mode_lock_and_no_temporary_files_left(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    users = UserStore(path, rounds=4)
    users.add("alice", "password1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["htpasswd", "htpasswd.lock"]
    assert stat.S_IMODE((tmp_path / "htpasswd.lock").stat().st_mode) == 0o600


def test_default_hash_is_bcrypt_2y_cost_12(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "htpasswd")
    users.add("alice", "password1")
    assert (tmp_path / "htpasswd").read_text().startswith("alice:$2y$12$")


def test_file_made_by_apache_htpasswd_verifies(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    assert htpasswd("-B", "-c", "-b", str(path), "alice", "alice-secret").returncode == 0
    assert htpasswd("-B", "-C", "6", "-b", str(path), "bob", "bob-secret").returncode == 0
    users = UserStore(path)
    assert users.users() == ["alice", "bob"]
    assert users.verify("alice", "alice-secret")
    assert users.verify("bob", "bob-secret")
    assert not users.verify("alice", "bob-secret")


def test_file_written_by_secreg_verifies_with_apache_htpasswd(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    users = UserStore(path, rounds=5)
    users.add("alice", "alice-secret")
    users.add("bob", "bob-secret")
    assert htpasswd("-vb", str(path), "alice", "alice-secret").returncode == 0
    assert htpasswd("-vb", str(path), "bob", "bob-secret").returncode == 0
    assert htpasswd("-vb", str(path), "alice", "wrong-secret").returncode != 0
    # And Apache's tool can keep editing the file secreg wrote, which secreg then reads.
    assert htpasswd("-B", "-b", str(path), "carol", "carol-secret").returncode == 0
    assert UserStore(path).verify("carol", "carol-secret")


def test_edits_keep_comments_and_other_lines(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    assert htpasswd("-B", "-c", "-b", str(path), "alice", "alice-secret").returncode == 0
    path.write_text("# managed by hand\n" + path.read_text())
    users = UserStore(path, rounds=4)
    users.add("bob", "bob-secret")
    users.set_password("alice", "new-secret")
    text = path.read_text()
    assert text.startswith("# managed by hand\nalice:$2y$04$")
    assert "\nbob:$2y$04$" in text


def test_only_bcrypt_entries_can_log_in(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "htpasswd"
    assert htpasswd("-c", "-m", "-b", str(path), "md5user", "md5-secret").returncode == 0
    assert htpasswd("-s", "-b", str(path), "shauser", "sha-secret").returncode == 0
    with path.open("a") as fh:
        fh.write("plainuser:plain-secret\n")
    with caplog.at_level(logging.WARNING, "secreg.auth"):
        users = UserStore(path)
    assert "md5user, plainuser, shauser" in caplog.text
    assert not users.verify("md5user", "md5-secret")
    assert not users.verify("shauser", "sha-secret")
    assert not users.verify("plainuser", "plain-secret")


def test_reload_after_change_by_another_writer(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    users = UserStore(path, rounds=4, check_interval=0)
    users.add("alice", "first-secret")
    other = UserStore(path, rounds=4, check_interval=0)  # e.g. `secreg user passwd` in another process
    other.set_password("alice", "second-secret")
    assert htpasswd("-B", "-C", "4", "-b", str(path), "bob", "bob-secret").returncode == 0
    assert users.verify("alice", "second-secret")
    assert not users.verify("alice", "first-secret")
    assert users.verify("bob", "bob-secret")


def test_file_is_checked_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    now = [100.0]
    parsed: list[bytes | None] = []

    def parse(data: bytes | None) -> bytes | None:
        parsed.append(data)
        return data

    path.write_bytes(b"one")
    watched = WatchedFile(path, parse, 1.0, clock=lambda: now[0])
    assert watched.get() == b"one"
    path.write_bytes(b"two, longer")
    assert watched.get() == b"one"  # within the interval: no stat at all
    now[0] += 1.0
    assert watched.get() == b"two, longer"
    now[0] += 5.0
    assert watched.get() == b"two, longer"
    assert parsed == [b"one", b"two, longer"]  # unchanged file: not parsed again


def test_broken_file_at_start_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("alice:$2y$05$abcdefghijklmnopqrstuv\nthis line is broken\n")
    with pytest.raises(ValueError, match="line 2"):
        UserStore(path)


def test_broken_file_on_reload_keeps_the_last_good_users(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "htpasswd"
    users = UserStore(path, rounds=4, check_interval=0)
    users.add("alice", "alice-secret")
    assert users.users() == ["alice"]
    path.write_text(path.read_text() + "garbage without colon\n")
    with caplog.at_level(logging.ERROR, "secreg.auth"):
        assert users.verify("alice", "alice-secret")
    assert "line 2" in caplog.text and "keeping the previous version" in caplog.text


def test_deleted_file_means_no_users(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    users = UserStore(path, rounds=4, check_interval=0)
    users.add("alice", "alice-secret")
    path.unlink()
    assert not users.verify("alice", "alice-secret")
    assert users.users() == []


def test_fingerprint_follows_the_password(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "htpasswd", rounds=4, check_interval=0)
    assert users.fingerprint("alice") is None
    users.add("alice", "first-secret")
    first = users.fingerprint("alice")
    assert first is not None and len(first) == 16
    assert users.fingerprint("alice") == first
    users.set_password("alice", "second-secret")
    assert users.fingerprint("alice") not in (None, first)
    users.delete("alice")
    assert users.fingerprint("alice") is None


def test_set_password_of_unknown_user_changes_nothing(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "htpasswd", rounds=4, check_interval=0)
    assert not users.set_password("ghost", "whatever-secret")
    assert users.users() == []


def test_unknown_user_costs_as_much_as_a_wrong_password(tmp_path: Path) -> None:
    """A wrong user name must not answer faster than a wrong password (no user enumeration by timing).
    Checked without a clock: every failed check runs exactly one real bcrypt verification, against a
    well-formed hash of the cost the file's hashes use (a dummy one for an unknown or unusable account)."""
    users = UserStore(tmp_path / "htpasswd", rounds=10, check_interval=0)
    users.add("alice", "alice-secret")
    context = users._context
    checked: list[tuple[str, bool]] = []
    original = context.verify

    def counting_verify(secret: str | bytes, hash: str) -> bool:  # noqa: A002 - passlib's name
        result = bool(original(secret, hash))  # the real bcrypt check, not a stand-in
        checked.append((hash, result))
        return result

    context.verify = counting_verify  # type: ignore[method-assign]

    def verifications(user: str, password: str) -> list[tuple[str, bool]]:
        checked.clear()
        assert not users.verify(user, password)
        return list(checked)

    def cost(hash_: str) -> int:
        match = re.match(r"^\$2[abxy]?\$([0-9]{2})\$[./A-Za-z0-9]{53}$", hash_)
        assert match, hash_
        return int(match.group(1))

    known = verifications("alice", "wrong-secret")
    assert len(known) == 1 and cost(known[0][0]) == 10
    for user, password in [("nobody", "wrong-secret"), ("alice", "\udcff surrogate"), ("", "x")]:
        unknown = verifications(user, password)
        assert len(unknown) == 1, (user, unknown)
        assert cost(unknown[0][0]) == 10, (user, unknown)
        assert unknown[0][0] != known[0][0]  # the dummy hash, never a real account's
    # The dummy's cost follows the file, not this process's setting: a file of cost-5 hashes, read by a
    # store that would write cost 10, checks an unknown user at cost 5 as well.
    UserStore(tmp_path / "cheap", rounds=5, check_interval=0).add("carol", "carol-secret")
    users = UserStore(tmp_path / "cheap", rounds=10, check_interval=0)
    context = users._context
    original = context.verify
    context.verify = counting_verify  # type: ignore[method-assign]
    assert [cost(h) for h, _ in verifications("carol", "wrong-secret")] == [5]
    assert [cost(h) for h, _ in verifications("nobody", "wrong-secret")] == [5]


def _record_checks(users: UserStore, before: Callable[[], None] | None = None) -> list[tuple[int, str]]:
    """Wrap `users._check` (one bcrypt run): each call is recorded as (thread id, password), then runs `before`
    (if any) and the real check."""
    calls: list[tuple[int, str]] = []
    original = users._check

    def check(snapshot: Any, user: str, password: str) -> bool:
        calls.append((threading.get_ident(), password))
        if before is not None:
            before()
        return original(snapshot, user, password)

    users._check = check  # type: ignore[method-assign]
    return calls


def test_verify_async_runs_bcrypt_off_the_event_loop(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "htpasswd", rounds=4, check_interval=0)
    users.add("alice", "alice-secret")
    calls = _record_checks(users)

    async def main() -> tuple[bool, bool, int]:
        return (
            await users.verify_async("alice", "alice-secret"),
            await users.verify_async("alice", "nope-nope"),
            threading.get_ident(),
        )

    ok, bad, loop_thread = anyio.run(main)
    assert ok and not bad
    assert calls and all(thread != loop_thread for thread, _ in calls)


def test_concurrent_checks_of_the_same_credentials_share_one_bcrypt_run(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "htpasswd", rounds=4, check_interval=0)
    users.add("alice", "alice-secret")
    calls = _record_checks(users)

    async def main() -> list[bool]:
        right = [users.verify_async("alice", "alice-secret") for _ in range(20)]
        wrong = [users.verify_async("alice", "not-the-secret") for _ in range(20)]
        return list(await asyncio.gather(*right, *wrong))

    results = asyncio.run(main())
    assert results == [True] * 20 + [False] * 20
    assert sorted(password for _, password in calls) == ["alice-secret", "not-the-secret"]  # one bcrypt run each


def test_a_check_never_joins_one_begun_against_an_older_file(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "htpasswd", rounds=4, check_interval=0)
    users.add("alice", "alice-secret")
    release = threading.Event()
    started = threading.Event()

    def hold() -> None:
        started.set()
        release.wait(30)

    _record_checks(users, hold)

    async def main() -> tuple[bool, bool]:
        before = asyncio.ensure_future(users.verify_async("alice", "alice-secret"))
        await asyncio.to_thread(started.wait, 30)  # in flight against the old file
        UserStore(tmp_path / "htpasswd", rounds=4).set_password("alice", "alice-new-secret")  # another process
        after = asyncio.ensure_future(users.verify_async("alice", "alice-secret"))
        await asyncio.sleep(0)
        release.set()
        return await before, await after

    began_before, after_change = asyncio.run(main())
    assert began_before  # checked against the file as it was when it began
    assert not after_change  # its own check, against the new file


def test_long_and_odd_passwords(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "htpasswd", rounds=4, check_interval=0)
    with pytest.raises(ValueError, match="too long"):
        users.add("alice", "x" * 73)
    with pytest.raises(ValueError, match="too short"):
        users.add("alice", "short")
    with pytest.raises(ValueError, match="NUL"):
        users.add("alice", "with\x00nul-byte")
    users.add("alice", "p\u00e4ssw\u00f6rd-\u2603")
    assert users.verify("alice", "p\u00e4ssw\u00f6rd-\u2603")
    assert not users.verify("alice", "x" * 200)  # longer than bcrypt reads: no exception
    assert not users.verify("alice", "nul\x00byte")
    assert not users.verify("alice", "\udcff-lone-surrogate")


def test_user_and_password_validation() -> None:
    for good in ("alice", "a", "ci-bot.2", "a_b", "0day"):
        assert validate_user_name(good) == good
    for bad in ("", "Alice", "-x", ".x", "a:b", "a b", "a/b", "x" * 65, "anonymous", "*", "alice\n"):
        with pytest.raises(ValueError):
            validate_user_name(bad)
    validate_password("eight ch")
    with pytest.raises(ValueError):
        validate_password("line\nbreak")


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    errors: list[BaseException] = []

    def add(name: str) -> None:
        try:
            UserStore(path, rounds=4).add(name, f"{name}-secret")
        except Exception as exc:  # noqa: BLE001  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(f"user{i}",)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert UserStore(path).users() == sorted(f"user{i}" for i in range(12))


def test_unreadable_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "htpasswd"
    path.mkdir()
    with pytest.raises(ValueError, match="cannot read"):
        UserStore(path)
    path.rmdir()
    users = UserStore(path, rounds=4, check_interval=0)
    users.add("alice", "alice-secret")
    assert users.users() == ["alice"]
    path.unlink()
    path.mkdir()
    with caplog.at_level(logging.ERROR, "secreg.auth"):
        assert users.users() == ["alice"]
    assert "cannot read" in caplog.text


def test_verified_credentials_are_remembered_until_the_file_changes_or_they_expire(tmp_path: Path) -> None:
    from secreg.auth.users import VerifiedCache

    now = [0.0]
    cache = VerifiedCache(60, clock=lambda: now[0])
    first, second = object(), object()  # two parsed versions of the htpasswd file
    assert not cache.hit(first, "alice", "pw")
    cache.remember(first, "alice", "pw")
    assert cache.hit(first, "alice", "pw")
    assert not cache.hit(first, "alice", "other") and not cache.hit(first, "bob", "pw")
    now[0] = 61
    assert not cache.hit(first, "alice", "pw")  # expired
    cache.remember(first, "alice", "pw")
    assert not cache.hit(second, "alice", "pw")  # the file changed: everything is forgotten
    assert not cache.hit(first, "alice", "pw")
    assert all(b"pw" not in key[1] for key in cache._entries)


def test_a_changed_password_is_refused_at_once_despite_the_cache(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "htpasswd", rounds=4)
    users.add("alice", "alice-secret")
    assert users.verify("alice", "alice-secret") and users.verify("alice", "alice-secret")
    UserStore(tmp_path / "htpasswd", rounds=4).set_password("alice", "alice-new-secret")  # another process
    assert not users.verify("alice", "alice-secret")
    assert users.verify("alice", "alice-new-secret")
