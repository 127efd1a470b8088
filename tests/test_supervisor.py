"""Serving with several workers (secreg/supervisor.py): the serving process is worker 0 and spawns the rest, each
on its own seat's SO_REUSEPORT sockets; connections spread over the workers; a dead worker is started again on
its seat; no worker outlives the server."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from secreg.config import load_settings
from tests.server import RunningServer, run_secreg

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
    assert load_settings(None, None, base_dir=tmp_path).workers == len(os.sched_getaffinity(0))  # the default


def test_the_default_on_a_one_cpu_mask_is_one_worker(tmp_path: Path) -> None:
    script = ("import os; from pathlib import Path; from secreg.config import load_settings; "
              "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
              "print(load_settings(None, None, base_dir=Path.cwd()).workers)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=60, check=True)
    assert done.stdout.strip() == "1"


def test_workers_flag_takes_a_count_or_auto() -> None:
    from secreg.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["serve", "--workers", "auto"]).workers == "auto"
    assert parser.parse_args(["serve", "--workers", "3"]).workers == 3


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


def _owners(server: RunningServer, client_ports: set[int]) -> dict[int, int]:
    """How many of the server-side ends of connections from `client_ports` each server process holds."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16), fields[9]
            if local == server.port and remote in client_ports:
                inodes[f"socket:[{inode}]"] = remote
    owners: dict[int, int] = {}
    for pid in {server.process.pid, *_children(server.process.pid)}:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    owners[pid] = owners.get(pid, 0) + 1
            except FileNotFoundError:
                pass
    return owners


def _request(sock: socket.socket, context: ssl.SSLContext) -> ssl.SSLSocket:
    tls = context.wrap_socket(sock, server_hostname="localhost")
    tls.sendall(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        piece = tls.recv(4096)
        assert piece, answer
        answer += piece
    assert answer.startswith(b"HTTP/1.1 200"), answer
    return tls


def test_connections_opened_at_once_spread_over_the_workers(tmp_path: Path) -> None:
    """32 connections made before any is served (as wrk, a browser or a pulling node open them): with one shared
    socket the first worker to wake accepted them all; each seat's own socket gets its share by the kernel's
    hash. 2 workers: a seat with none of 32 uniformly hashed connections has odds of 2**-31."""
    with run_secreg(tmp_path, {**OPEN, "http": {"workers": 2}}) as server:
        _wait(lambda: len(_children(server.process.pid)) == 1)
        sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(32)]
        ports = {sock.getsockname()[1] for sock in sockets}
        context = server.ssl_context()
        with ThreadPoolExecutor(8) as pool:
            opened = list(pool.map(lambda sock: _request(sock, context), sockets))
        try:
            owners = _owners(server, ports)
            assert sum(owners.values()) == 32, owners
            assert len(owners) == 2 and min(owners.values()) > 0, owners
        finally:
            for tls in opened:
                tls.close()


def test_connections_to_a_dead_workers_seat_wait_for_its_successor(tmp_path: Path) -> None:
    """The serving process keeps every seat's socket open: connections the kernel hashes to a seat whose worker
    was just killed queue in its backlog and are answered by the worker started in its place, none reset."""
    with run_secreg(tmp_path, {**OPEN, "http": {"workers": 2}}) as server:
        _wait(lambda: len(_children(server.process.pid)) == 1)
        (victim,) = _children(server.process.pid)
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: not _alive(victim))
        sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(32)]
        context = server.ssl_context()
        with ThreadPoolExecutor(8) as pool:
            opened = list(pool.map(lambda sock: _request(sock, context), sockets))
        for tls in opened:
            tls.close()
        assert "starting another" in server.log()
        assert _children(server.process.pid) - {victim}


def test_a_port_another_process_listens_on_with_reuseport_is_refused(tmp_path: Path) -> None:
    """SO_REUSEPORT would let a second server of the same user share the port (and half its clients): the
    multi-worker start checks the port first and fails as one worker does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        result = subprocess.run([sys.executable, "-m", "secreg", "serve", "--no-auth", "--workers", "2",
                                 "--addr", addr], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"secreg: error: cannot listen on {addr}: Address already in use" in result.stderr


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


def test_a_worker_restarted_while_the_object_store_is_down_serves_on(tmp_path: Path) -> None:
    """A worker started again while its S3 store cannot be reached used to exit on the bucket check, again each
    second: the connections the kernel hashed to its seat waited for a worker that never came (a TLS handshake
    that timed out). It serves on, as the serving process does: every one of 32 new connections is answered."""
    from tests.objectstores import moto_server

    with moto_server(tmp_path) as store:
        config = {**OPEN, "http": {"workers": 2}, "storage": {"s3": store.s3_settings("down-restart")}}
        served = run_secreg(tmp_path / "server", config)
        server = served.__enter__()
        try:
            _wait(lambda: len(_children(server.process.pid)) == 1)
            with server.client() as c:
                assert c.get("/v2/").status_code == 200
        except BaseException:
            served.__exit__(None, None, None)
            raise
    try:  # the store has stopped; the spawned worker is killed and started again without it
        (victim,) = _children(server.process.pid)
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: not _alive(victim) and "storage unreachable as this worker starts" in server.log())
        sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(32)]
        context = server.ssl_context()
        for sock in sockets:
            sock.settimeout(20)
        with ThreadPoolExecutor(8) as pool:
            opened = list(pool.map(lambda sock: _request(sock, context), sockets))
        for tls in opened:
            tls.close()
        (successor,) = _children(server.process.pid)
        assert successor != victim and "exited with 1" not in server.log()
    finally:
        served.__exit__(None, None, None)
