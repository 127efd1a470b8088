"""Serving with several workers (secreg/supervisor.py): the serving process is worker 0 and spawns the rest on
its sockets; a dead worker is started again; no worker outlives the server."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from secreg.config import load_settings
from tests.server import run_secreg

OPEN = {"auth": {"enabled": False}}


def _children(pid: int) -> set[int]:
    done = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return {int(p) for p in done.stdout.split()}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait(condition, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_auto_worker_count_is_the_cpu_count(tmp_path: Path) -> None:
    assert load_settings(None, {"http": {"workers": "auto"}}, base_dir=tmp_path).workers == len(os.sched_getaffinity(0))
    assert load_settings(None, {"http": {"workers": 3}}, base_dir=tmp_path).workers == 3
    assert load_settings(None, None, base_dir=tmp_path).workers == 1


def test_three_workers_one_parent_and_a_dead_worker_comes_back(tmp_path: Path) -> None:
    with run_secreg(tmp_path, {**OPEN, "http": {"workers": 3}}) as server:
        _wait(lambda: len(_children(server.process.pid)) == 2)
        first = _children(server.process.pid)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: len(_children(server.process.pid) - {victim}) == 2 and not _alive(victim))
        assert "starting another" in server.log()
        for _ in range(20):  # new connections each: whichever worker accepts answers
            with server.client() as c:
                assert c.get("/v2/").status_code == 200


def test_workers_die_with_a_killed_server(tmp_path: Path) -> None:
    with run_secreg(tmp_path, {**OPEN, "http": {"workers": 2}}) as server:
        _wait(lambda: len(_children(server.process.pid)) == 1)
        (worker,) = _children(server.process.pid)
        server.process.send_signal(signal.SIGKILL)  # no chance to stop its workers
        server.process.wait()
        _wait(lambda: not _alive(worker))


def test_the_workers_directory_goes_with_the_server(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    with run_secreg(tmp_path / "server", {**OPEN, "http": {"workers": 2}}, env={"TMPDIR": str(temp)}) as server:
        _wait(lambda: len(_children(server.process.pid)) == 1)
        assert len(list(temp.glob("secreg-workers-*"))) == 1
    assert list(temp.glob("secreg-workers-*")) == []


def test_a_killed_servers_workers_directory_goes_at_the_next_start(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    config = {**OPEN, "http": {"workers": 2}}
    with run_secreg(tmp_path / "killed", config, env={"TMPDIR": str(temp)}) as server:
        (left,) = temp.glob("secreg-workers-*")
        os.killpg(server.process.pid, signal.SIGKILL)  # no chance to clean up
        server.process.wait()
    assert left.exists()
    os.utime(left, (time.time() - 60, time.time() - 60))  # older than a starting server takes to lock its own
    with run_secreg(tmp_path / "next", config, env={"TMPDIR": str(temp)}) as server:
        assert not left.exists()
        assert len(list(temp.glob("secreg-workers-*"))) == 1  # the running server's own stays
