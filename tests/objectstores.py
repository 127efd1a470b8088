"""S3-compatible servers on loopback for the tests and the bench, started and stopped by PID.

- `moto_server`: the `moto` emulator (PyPI `moto[server]`), an in-memory imitation of S3: fast, used for the
  driver conformance suite and fault injection.
- `swift_server`: a real distributed object store, OpenStack Swift (Debian's packages) with its `s3api`
  middleware, in an all-in-one ring under a scratch directory (see /work/shared/notes/test-servers.md).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.e2e.processes import dying_with_parent
from tests.server import free_port, stop_process_group


@dataclass(frozen=True)
class ObjectStore:
    endpoint: str  # http://127.0.0.1:PORT
    accesskey: str
    secretkey: str
    region: str
    emulator: bool

    def s3_settings(self, bucket: str, **extra: object) -> dict[str, object]:
        """The `storage.s3` block for a secreg config pointing at this server."""
        return {"bucket": bucket, "region": self.region, "regionendpoint": self.endpoint,
                "accesskey": self.accesskey, "secretkey": self.secretkey, "secure": False, **extra}


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not up after {timeout} s: {log.read_text()[-2000:]}")


@contextmanager
def moto_server(workdir: Path) -> Iterator[ObjectStore]:
    port = free_port()
    log = workdir / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            dying_with_parent([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_http(f"http://127.0.0.1:{port}/moto-api/", process, log)
        yield ObjectStore(f"http://127.0.0.1:{port}", "testing", "testing", "us-east-1", emulator=True)
    finally:
        stop_process_group(process)


_SERVER_CONF = """[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
user = {user}
swift_dir = {etc}
devices = {node}
mount_check = false
log_name = {name}
[pipeline:main]
pipeline = {name}-server
[app:{name}-server]
use = egg:swift#{name}
"""

_PROXY_CONF = """[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
user = {user}
swift_dir = {etc}
log_name = proxy
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo \
proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{memcache_port}
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
"""


def swift_available() -> bool:
    return all(shutil.which(f"swift-{n}-server") for n in ("proxy", "object", "container", "account"))


@contextmanager
def swift_server(workdir: Path) -> Iterator[ObjectStore]:
    """Four Swift servers (object, container, account, proxy with s3api) on free loopback ports."""
    etc, node = workdir / "etc", workdir / "node"
    (node / "d1").mkdir(parents=True, exist_ok=True)
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "swift.conf").write_text(
        "[swift-hash]\nswift_hash_path_suffix = test-suffix\nswift_hash_path_prefix = test-prefix\n"
        "[storage-policy:0]\nname = Policy-0\ndefault = yes\n"
    )
    user = pwd.getpwuid(os.getuid()).pw_name  # else Swift drops root for "swift", who cannot write here
    ports = {"object": free_port(), "container": free_port(), "account": free_port()}
    for name, port in ports.items():
        for command in (["create", "10", "1", "1"], ["add", f"r1z1-127.0.0.1:{port}/d1", "1"], ["rebalance"]):
            subprocess.run(["swift-ring-builder", str(etc / f"{name}.builder"), *command],
                           check=command[0] != "rebalance", capture_output=True)
        conf = _SERVER_CONF.format(port=port, etc=etc, node=node, name=name, user=user)
        (etc / f"{name}-server.conf").write_text(conf)
    proxy_port = free_port()
    conf = _PROXY_CONF.format(port=proxy_port, etc=etc, user=user, memcache_port=free_port())
    (etc / "proxy-server.conf").write_text(conf)
    processes: list[subprocess.Popen[bytes]] = []
    log = workdir / "swift.log"
    try:
        with open(log, "ab") as out:
            for name in ("object", "container", "account", "proxy"):
                processes.append(subprocess.Popen(
                    dying_with_parent([f"swift-{name}-server", str(etc / f"{name}-server.conf"), "-v"]),
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir,
                    env={**os.environ, "PYTHONWARNINGS": "ignore"},
                ))
        _wait_http(f"http://127.0.0.1:{proxy_port}/healthcheck", processes[-1], log)
        yield ObjectStore(f"http://127.0.0.1:{proxy_port}", "test:tester", "testing", "us-east-1", emulator=False)
    finally:
        for process in reversed(processes):
            stop_process_group(process)
