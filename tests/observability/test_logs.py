"""The access log (stdout, JSON or text) and the audit log (JSON lines, optionally a 0600 file) of a real server."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from secreg.observability import accesslog
from secreg.observability.accesslog import LOGGER, AccessLog, AccessRecord, LineHandler
from tests.auth.test_auth_registry import add_user
from tests.oci import push_blob, push_image, sha256
from tests.server import RunningServer, run_secreg, token

ACCESS_FIELDS = {"time", "request_id", "client", "user", "method", "path", "route", "repository", "action",
                 "status", "bytes_in", "bytes_out", "duration", "user_agent", "cache"}


def eventually(check: Callable[[], bool], timeout: float = 60) -> None:
    """The access line (and the push / delete audit event) is written once the response has gone out,
    so a client can read the log before it is there: wait for it."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting for the log"
        time.sleep(0.02)


def by_request_id(server: RunningServer, *ids: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}

    def all_there() -> bool:
        found.clear()
        found.update({line["request_id"]: line for line in access_lines(server)})
        return all(i in found for i in ids)

    eventually(all_there)
    return found


def json_lines(server: RunningServer) -> list[dict[str, Any]]:
    lines = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def access_lines(server: RunningServer) -> list[dict[str, Any]]:
    return [line for line in json_lines(server) if "request_id" in line and "route" in line]


def audit_events(server: RunningServer, event: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(server) if line.get("event") == event]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("logs")
    config = {"storage": {"delete": {"enabled": True}}, "log": {"audit": {"file": "audit/audit.log"}}}
    with run_secreg(workdir, config) as running:
        add_user(running, "alice", "alice-password")
        yield running


def test_one_json_access_line_per_request_with_request_id(server: RunningServer) -> None:
    bearer = token(server, "alice", "alice-password", "repository:alice/logged:pull,push")
    with server.client(headers={"Authorization": f"Bearer {bearer}", "User-Agent": "log-test/1"}) as client:
        data = b"a" * 5000
        digest = sha256(data)
        posted = client.post("/v2/alice/logged/blobs/uploads/", params={"digest": digest}, content=data)
        fetched = client.get(f"/v2/alice/logged/blobs/{digest}", headers={"X-Request-Id": "trace-42.a:b"})
        odd = client.get("/v2/", headers={"X-Request-Id": "no spaces allowed"})
    assert posted.status_code == 201 and fetched.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", posted.headers["X-Request-Id"])
    assert fetched.headers["X-Request-Id"] == "trace-42.a:b"  # a sane incoming id is kept
    assert odd.headers["X-Request-Id"] != "no spaces allowed"
    assert re.fullmatch(r"[0-9a-f]{32}", odd.headers["X-Request-Id"])
    assert odd.headers["X-Request-Id"] != posted.headers["X-Request-Id"]
    by_id = by_request_id(server, posted.headers["X-Request-Id"], "trace-42.a:b")
    push = by_id[posted.headers["X-Request-Id"]]
    assert set(push) == ACCESS_FIELDS
    assert push["client"] == "127.0.0.1" and push["user"] == "alice"
    assert (push["method"], push["path"], push["route"]) == (
        "POST", "/v2/alice/logged/blobs/uploads/", "/v2/{name:path}/blobs/uploads/")
    assert (push["repository"], push["action"], push["status"]) == ("alice/logged", "push", 201)
    assert push["bytes_in"] == 5000 and push["bytes_out"] == 0
    assert push["user_agent"] == "log-test/1" and 0 < push["duration"] < 30
    assert "digest=" not in push["path"]  # never the query string
    pull = by_id["trace-42.a:b"]
    assert (pull["action"], pull["status"], pull["bytes_out"]) == ("pull", 200, 5000)


def test_requests_refused_before_routing_are_logged_too(server: RunningServer) -> None:
    with server.client() as client:
        refused = client.get("/v2/alice/secret/manifests/latest")
        missing = client.get("/no/such/endpoint")
    by_id = by_request_id(server, refused.headers["X-Request-Id"], missing.headers["X-Request-Id"])
    line = by_id[refused.headers["X-Request-Id"]]
    assert (line["status"], line["user"], line["repository"], line["action"]) == (401, "-", "alice/secret", "pull")
    assert line["route"] == "/v2/{name:path}/manifests/{reference}"
    assert by_id[missing.headers["X-Request-Id"]]["route"] == "unmatched"


def test_token_logins_show_the_user(server: RunningServer) -> None:
    with server.client() as client:
        response = client.get("/auth/token", params={"service": "secreg"}, auth=("alice", "alice-password"))
    line = by_request_id(server, response.headers["X-Request-Id"])[response.headers["X-Request-Id"]]
    assert (line["user"], line["action"], line["route"]) == ("alice", "token", "/auth/token")


def test_audit_events_for_logins_denials_pushes_and_deletes(server: RunningServer) -> None:
    with server.client() as client:
        assert client.get("/auth/token", params={"service": "secreg"}, auth=("alice", "bad-pw")).status_code == 401
        narrow = token(server, "alice", "alice-password", "repository:alice/audited:pull")
        denied = client.post("/v2/alice/audited/blobs/uploads/", headers={"Authorization": f"Bearer {narrow}"})
        assert denied.status_code == 401
        invalid = client.get("/v2/", headers={"Authorization": "Bearer garbage"})
        assert invalid.status_code == 401
    bearer = token(server, "alice", "alice-password", "repository:alice/audited:pull,push")
    with server.client(headers={"Authorization": f"Bearer {bearer}"}) as client:
        digest, _ = push_image(client, "alice/audited", "v1", seed="audit")
        blob = push_blob(client, "alice/audited", b"doomed blob")
    assert server.admin_password
    admin = token(server, "admin", server.admin_password, "repository:alice/audited:delete")
    with server.client(headers={"Authorization": f"Bearer {admin}"}) as client:
        assert client.delete(f"/v2/alice/audited/manifests/{digest}").status_code == 202
        assert client.delete(f"/v2/alice/audited/blobs/{blob}").status_code == 202
    eventually(lambda: bool(audit_events(server, "blob.delete")))

    failed = audit_events(server, "login.failed")[-1]
    assert failed["user"] == "alice" and failed["client"] == "127.0.0.1" and failed["level"] == "warning"
    assert audit_events(server, "login.ok")
    scope_denied = audit_events(server, "access.denied")
    assert any(e["error"] == "insufficient_scope" and e["user"] == "alice" and e["request_id"] ==
               denied.headers["X-Request-Id"] and e["needed"] == "repository:alice/audited:pull,push"
               for e in scope_denied)
    assert any(e["error"] == "invalid_token" and e["request_id"] == invalid.headers["X-Request-Id"]
               for e in scope_denied)
    pushed = audit_events(server, "manifest.push")[-1]
    assert {k: pushed[k] for k in ("user", "repository", "reference", "digest")} == {
        "user": "alice", "repository": "alice/audited", "reference": "v1", "digest": digest}
    deleted = audit_events(server, "manifest.delete")[-1]
    assert (deleted["user"], deleted["reference"], deleted["digest"]) == ("admin", digest, digest)
    assert audit_events(server, "blob.delete")[-1]["reference"] == blob
    assert "bad-pw" not in server.log() and "alice-password" not in server.log()


def test_audit_file_is_private_and_records_cli_user_changes(server: RunningServer) -> None:
    audit_file = server.workdir / "audit" / "audit.log"
    assert stat.S_IMODE(audit_file.stat().st_mode) == 0o600
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    base = [sys.executable, "-m", "secreg", "user"]
    where = ["--config", str(server.workdir / "config.yml")]
    for args, stdin in ((["add", "dave", "--password-stdin", "--group", "ops"], "dave-password"),
                        (["passwd", "dave", "--password-stdin"], "dave-password-2"),
                        (["groups", "dave", "--add", "dev", "--remove", "ops"], None),
                        (["del", "dave"], None)):
        done = subprocess.run([*base, *args, *where], input=stdin, text=True, capture_output=True, env=env,
                              cwd=server.workdir, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert "{" not in done.stdout + done.stderr  # the CLI prints no audit lines
    events = [json.loads(line) for line in audit_file.read_text().splitlines()]
    cli = [e for e in events if e["event"].startswith("user.")]
    assert [(e["event"], e["user"]) for e in cli] == [
        ("user.add", "dave"), ("user.passwd", "dave"), ("user.groups", "dave"), ("user.delete", "dave")]
    assert cli[0]["groups"] == ["ops"] and cli[2]["added"] == ["dev"] and cli[2]["removed"] == ["ops"]
    assert all(e["by"] for e in cli)
    # The server's events land in the same file.
    assert any(e["event"] == "login.ok" for e in events)
    assert any(e["event"] == "policy.loaded" for e in events)
    assert "dave-password" not in audit_file.read_text()


def test_text_access_log_and_policy_changes(tmp_path: Path) -> None:
    config = {"log": {"accesslog": {"format": "text"}}}
    with run_secreg(tmp_path, config) as running, running.client() as client:
        response = client.get("/v2/", headers={"User-Agent": "text-test"})
        policy = running.workdir / "auth" / "policy.yaml"
        policy.write_text(policy.read_text() + "\n  - bad: rule\n")
        time.sleep(1.2)  # the policy is checked at most once a second, when a request consults it
        assert client.get("/auth/token", params={"service": "secreg"}).status_code == 200
        eventually(lambda: f" {response.headers['X-Request-Id']} " in running.log())
        log = running.log()
    request_id = response.headers["X-Request-Id"]
    line = next(x for x in log.splitlines() if f" {request_id} " in x)
    assert re.fullmatch(
        rf'\S+Z {request_id} 127\.0\.0\.1 - "GET /v2/" 401 0 \d+ \d+\.\d{{6}} - - "text-test" -', line), line
    invalid = [json.loads(x) for x in log.splitlines() if '"event": "policy.invalid"' in x]
    assert invalid and "unknown key 'bad'" in invalid[0]["error"]


def test_access_log_can_be_turned_off(tmp_path: Path) -> None:
    with run_secreg(tmp_path, {"auth": {"enabled": False}, "log": {"accesslog": {"disabled": True}}}) as running:
        with running.client() as client:
            assert client.get("/v2/").headers["X-Request-Id"]
        assert '"request_id"' not in running.log()


def test_debug_level_keeps_libraries_that_print_secrets_quiet(tmp_path: Path) -> None:
    """At log.level debug our own loggers speak up, but httpx (URLs with signed queries), hpack (decoded HTTP/2
    headers, Authorization included), botocore and urllib3 (signed object-store requests) stay at WARNING."""
    script = (
        "import logging\n"
        "from secreg.config import load_settings\n"
        "from secreg.observability.logconfig import NOISY_LOGGERS, configure_server_logging\n"
        "configure_server_logging(load_settings(overrides={'log': {'level': 'debug'}}, environ={}))\n"
        "print(logging.getLogger('secreg.proxy').getEffectiveLevel(),"
        " *sorted({logging.getLogger(n).getEffectiveLevel() for n in NOISY_LOGGERS}))\n"
        "print(*NOISY_LOGGERS)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=True)
    levels, names = done.stdout.splitlines()
    assert levels.split() == [str(logging_level("DEBUG")), str(logging_level("WARNING"))]
    assert {"httpx", "hpack", "botocore", "urllib3"} <= set(names.split())


def logging_level(name: str) -> int:
    import logging

    return int(logging.getLevelName(name))


# --- lines of one event-loop iteration, written together -----------------------------------------------------------


class _Writes(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)


@contextmanager
def _access_stream() -> Iterator[_Writes]:
    """The access logger as the server sets it up (one LineHandler; pytest's own handlers, which it adds for the
    test's call, set aside), on a stream that keeps each write."""
    logger = logging.getLogger(LOGGER)
    saved = (logger.handlers, logger.level, logger.disabled, logger.propagate)
    stream = _Writes()
    logger.handlers, logger.disabled, logger.propagate = [LineHandler(stream)], False, False
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.handlers, _, logger.disabled, logger.propagate = saved
        logger.setLevel(saved[1])


def _record(n: int) -> AccessRecord:
    return AccessRecord(request_id=f"id-{n}", client="::1", user="-", method="GET", path="/v2/", route="/v2/",
                        repository="-", action="-", status=200, bytes_in=0, bytes_out=2, duration=0.001,
                        user_agent="test")


def _ids(text: str) -> list[str]:
    return [json.loads(line)["request_id"] for line in text.splitlines()]


def test_the_lines_of_a_loop_iteration_are_one_write_when_its_callbacks_are_done(
        monkeypatch: pytest.MonkeyPatch) -> None:
    access = AccessLog("json")
    monkeypatch.setattr(accesslog.time, "time", lambda: 1_000_000_000.25)

    async def requests() -> None:
        assert access_stream.writes == []
        access.write(_record(1))
        access.write(_record(2))
        assert access_stream.writes == []  # not yet: this iteration may finish more requests
        monkeypatch.setattr(accesslog.time, "time", lambda: 2_000_000_000.0)
        await asyncio.sleep(0)  # the next iteration
        assert [_ids(w) for w in access_stream.writes] == [["id-1", "id-2"]]
        access.write(_record(3))
        await asyncio.sleep(0)
        assert [_ids(w) for w in access_stream.writes] == [["id-1", "id-2"], ["id-3"]]

    with _access_stream() as access_stream:
        asyncio.run(requests())
    first = [json.loads(line) for line in access_stream.writes[0].splitlines()]
    assert [line["time"] for line in first] == ["2001-09-09T01:46:40.250Z"] * 2  # when recorded, not written
    assert access_stream.getvalue() == ""  # each write went to the stream, nothing else


def test_lines_kept_by_a_loop_that_stopped_are_written_first() -> None:
    access = AccessLog("text")
    loop = asyncio.new_event_loop()
    with _access_stream() as access_stream:
        def request() -> None:
            access.write(_record(1))
            loop.stop()  # before the iteration that would write it

        loop.call_soon(request)
        loop.run_forever()
        assert access_stream.writes == []
        access.write(_record(2))  # outside any loop: written at once, after what was kept
        assert [w.split()[1] for w in access_stream.writes] == ["id-1", "id-2"]

        loop.call_soon(request)
        loop.run_forever()
        asyncio.run(asyncio.sleep(0, access.write(_record(3))))  # another loop
        assert [w.split()[1] for w in access_stream.writes] == ["id-1", "id-2", "id-1", "id-3"]
    loop.close()
