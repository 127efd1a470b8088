"""`secreg gc` from the command line, against the storage of a running `secreg serve`: idle upload sessions
(`--upload-age`), never one being written, and progress (a line per phase, or one line rewritten on a tty)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from secreg.digest import Digest
from secreg.registry.gc import CLOCK_SLACK
from secreg.storage import layout
from secreg.storage.filesystem import FilesystemDriver
from tests.oci import sha256
from tests.server import run_secreg

OLD = time.time() - 3 * 86400


def _gc(storage: Path, *args: str, tty: bool = False) -> str:
    command = [sys.executable, "-m", "secreg", "gc", "--storage", str(storage), *args]
    if not tty:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
        return result.stdout + result.stderr
    leader, follower = pty.openpty()
    with subprocess.Popen(command, stdout=follower, stderr=follower) as process:
        os.close(follower)
        output = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(timeout=120) == 0
    os.close(leader)
    return output.decode(errors="replace")


def test_idle_upload_sessions_are_removed_but_never_one_being_written(tmp_path: Path) -> None:
    data = os.urandom(256 * 1024)
    with run_secreg(tmp_path, {"auth": {"enabled": False}}) as server, server.client() as c:
        idle = c.post("/v2/crashed/app/blobs/uploads/").headers["Location"]
        assert c.patch(idle, content=b"x" * 1000, headers={"Content-Range": "0-999"}).status_code == 202
        idle_id = idle.rstrip("/").split("/")[-1].split("?")[0]
        started = server.storage / layout.upload_started_at("crashed/app", idle_id)
        started.write_text("2000-01-01T00:00:00+00:00")
        os.utime(server.storage / layout.upload_data("crashed/app", idle_id), (OLD, OLD))

        busy = c.post("/v2/busy/app/blobs/uploads/").headers["Location"]
        streaming = threading.Event()

        def slow_body() -> Iterator[bytes]:
            for i in range(0, len(data), 16 * 1024):
                if i == 64 * 1024:
                    streaming.set()
                time.sleep(0.1)
                yield data[i : i + 16 * 1024]

        answers: list[int] = []

        def push() -> None:
            with server.client() as pusher:
                r = pusher.patch(busy, content=slow_body())
                answers.append(r.status_code)
                if r.status_code == 202:
                    answers.append(pusher.put(r.headers["Location"], params={"digest": sha256(data)}).status_code)

        thread = threading.Thread(target=push)
        thread.start()
        assert streaming.wait(30)
        output = _gc(server.storage, "--grace", "0", "--upload-age", "0")  # every session counts as idle...
        thread.join(60)
        assert answers == [202, 201]  # ...but the one being written is left alone
        assert "upload sessions idle for more than 0 s (--upload-age)" in output
        assert f"removed upload session crashed/app {idle_id} (idle 3 days, 1000 bytes)" in output
        assert "busy/app" not in output
        assert c.get(idle).status_code == 404
        assert c.get(f"/v2/busy/app/blobs/{sha256(data)}").content == data


def test_progress_is_a_line_per_phase_or_one_line_on_a_terminal(tmp_path: Path) -> None:
    storage = tmp_path / "data"
    driver = FilesystemDriver(storage)
    for i in range(300):  # orphans: blobs no repository links (what a push without a manifest leaves, unlinked)
        data = f"orphan {i}".encode()
        driver.write_bytes(layout.blob_data(Digest.of(data)), data)
    # `--grace 0` still spares what changed within the clock slack (1 s) before the run: let the last write age.
    time.sleep(CLOCK_SLACK + 0.2)
    plain = _gc(storage, "--grace", "0", "--dry-run")
    lines = [line for line in plain.splitlines() if line.startswith("gc: ")]
    assert any(line.startswith("gc: scanned 300/300") for line in lines), plain
    assert "\r" not in plain
    shown = _gc(storage, "--grace", "0", tty=True)
    assert "\rgc: scanned" in shown and "\rgc: deleted" in shown, shown[-2000:]
    assert "removed 300 blob(s)" in shown
