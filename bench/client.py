"""The clients: a blocking HTTP/1.1 client with big buffers for the byte workloads, and runners for curl and wrk.

The Python client sends a request body with one `sendall` per 16 MiB piece (OpenSSL writes it as full TLS
records in one call) and reads responses with `recv_into` a reused 4 MiB buffer, so it touches each byte once
and never hashes on the hot path (content is checked once, untimed, in `verify_pull`). Its CPU time is
measured per operation (thread CPU time) and reported, so a saturated client would show.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.servers import Server

MiB = 1024 * 1024
_READ_BUFFER = 4 * MiB
_SEND_BLOCK = 4 * MiB


class BenchError(RuntimeError):
    """A registry answered something a workload did not expect."""


class Blob:
    """`size` bytes made of a random base repeated, the first bytes replaced by `tag` so every blob differs."""

    def __init__(self, base: bytes, size: int, tag: str) -> None:
        first = bytearray(base[: min(len(base), size)])
        label = tag.encode()[: len(first)]
        first[: len(label)] = label
        self._first = bytes(first)
        self._base = base
        self.size = size
        hasher = hashlib.sha256()
        for piece in self.pieces():
            hasher.update(piece)
        self.digest = f"sha256:{hasher.hexdigest()}"

    def pieces(self, start: int = 0, end: int | None = None) -> Iterator[memoryview]:
        """Views covering [start, end) of the blob, each at most len(base) bytes."""
        end = self.size if end is None else end
        unit = len(self._base)
        position = start
        while position < end:
            index, offset = divmod(position, unit)
            source = self._first if index == 0 else self._base
            length = min(unit - offset, end - position)
            yield memoryview(source)[offset : offset + length]
            position += length

    def write_to(self, path: Path) -> Path:
        with path.open("wb") as out:
            for piece in self.pieces():
                out.write(piece)
        return path


def random_base(size: int) -> bytes:
    return os.urandom(size)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Timed:
    seconds: float
    cpu: float  # client CPU seconds (this thread)
    extra: dict[str, Any] = field(default_factory=dict)


class Client:
    """One keep-alive HTTPS/1.1 connection to one registry, optionally with a bearer token."""

    def __init__(self, server: Server, token: str | None = None) -> None:
        self.server = server
        self.token = token
        context = ssl.create_default_context(cafile=str(server.ca))
        context.set_alpn_protocols(["http/1.1"])
        self._conn = http.client.HTTPSConnection(server.host, server.port, context=context, timeout=300,
                                                 blocksize=_SEND_BLOCK)
        self._buffer = bytearray(_READ_BUFFER)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _headers(self, headers: Mapping[str, str] | None) -> dict[str, str]:
        merged = dict(headers or {})
        if self.token:
            merged["Authorization"] = f"Bearer {self.token}"
        return merged

    def request(self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None,
                expect: tuple[int, ...] = ()) -> Response:
        self._conn.request(method, path, body=body, headers=self._headers(headers))
        response = self._conn.getresponse()
        data = response.read()
        result = Response(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
        if expect and result.status not in expect:
            raise BenchError(f"{self.server.name}: {method} {path} -> {result.status}: {data[:500]!r}")
        return result

    def pull(self, repo: str, digest: str) -> int:
        """GET a blob, reading it into a reused buffer; returns the number of bytes received."""
        self._conn.request("GET", f"/v2/{repo}/blobs/{digest}", headers=self._headers(None))
        response = self._conn.getresponse()
        if response.status != 200:
            raise BenchError(f"{self.server.name}: GET blob -> {response.status}: {response.read()[:500]!r}")
        view = memoryview(self._buffer)
        received = 0
        while True:
            count = response.readinto(view)
            if not count:
                break
            received += count
        return received

    def pull_until_close(self, path: str) -> int:
        self._conn.request("GET", path)
        response = self._conn.getresponse()
        view = memoryview(self._buffer)
        received = 0
        while count := response.readinto(view):
            received += count
        return received

    def start_upload(self, repo: str) -> str:
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"}, expect=(202,))
        return self.server.path_of(r.headers["location"])

    def push_monolithic(self, repo: str, blob: Blob) -> None:
        """POST to open a session, then PUT ?digest= with the whole blob as the body."""
        location = self.start_upload(repo)
        self.request("PUT", _with_digest(location, blob.digest), body=blob.pieces(),
                     headers={"Content-Length": str(blob.size), "Content-Type": "application/octet-stream"},
                     expect=(201,))

    def push_chunked(self, repo: str, blob: Blob, chunk: int) -> int:
        """POST, one PATCH per `chunk` bytes (Content-Range), then PUT ?digest= without a body."""
        location = self.start_upload(repo)
        patches = 0
        for start in range(0, blob.size, chunk):
            end = min(start + chunk, blob.size)
            r = self.request("PATCH", location, body=blob.pieces(start, end), headers={
                "Content-Length": str(end - start),
                "Content-Range": f"{start}-{end - 1}",
                "Content-Type": "application/octet-stream",
            }, expect=(202,))
            location = self.server.path_of(r.headers["location"])
            patches += 1
        self.request("PUT", _with_digest(location, blob.digest), headers={"Content-Length": "0"}, expect=(201,))
        return patches

    def put_manifest(self, repo: str, reference: str, content: bytes, media_type: str) -> str:
        r = self.request("PUT", f"/v2/{repo}/manifests/{reference}", body=content,
                         headers={"Content-Type": media_type}, expect=(201,))
        return r.headers.get("docker-content-digest", "")


def _with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


def timed(action: Any) -> tuple[Any, float, float]:
    """Run `action()`; return its result, wall seconds and this thread's CPU seconds."""
    cpu = time.thread_time()
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start, time.thread_time() - cpu


def verify_pull(server: Server, repo: str, blob: Blob, token: str | None = None) -> None:
    """Untimed: the blob comes back byte for byte."""
    with Client(server, token) as client:
        client._conn.request("GET", f"/v2/{repo}/blobs/{blob.digest}", headers=client._headers(None))
        response = client._conn.getresponse()
        hasher = hashlib.sha256()
        while chunk := response.read(_READ_BUFFER):
            hasher.update(chunk)
    if response.status != 200 or f"sha256:{hasher.hexdigest()}" != blob.digest:
        raise BenchError(f"{server.name}: blob {blob.digest} did not come back intact (status {response.status})")


# --- external tools ----------------------------------------------------------------------------------


@dataclass
class ToolRun:
    returncode: int
    stdout: str
    stderr: str
    wall: float
    cpu: float  # user + system seconds of the tool (from wait4)


def run_tool(argv: list[str], timeout: float) -> ToolRun:
    """Run a tool and account its CPU time exactly (wait4 on its pid)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ToolRun(process.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                       wall, usage.ru_utime + usage.ru_stime)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


_CURL_FORMAT = "%{http_code} %{time_total} %{size_download} %{size_upload} %{http_version}"


def curl(
    server: Server, args: list[str], url_path: str, http2: bool, timeout: float = 120
) -> tuple[ToolRun, dict[str, Any]]:
    """One curl request to `server`; returns the run and curl's own figures (status, time_total, sizes)."""
    argv = ["curl", "-sS", "--http2" if http2 else "--http1.1", "--cacert", str(server.ca), "-o", "/dev/null",
            "-w", _CURL_FORMAT, *args, f"{server.url}{url_path}"]
    run = run_tool(argv, timeout)
    fields = run.stdout.split()
    if run.returncode != 0 or len(fields) != 5:
        raise BenchError(f"{server.name}: curl failed ({run.returncode}): {run.stderr.strip()[:500]}")
    status, total, down, up, version = fields
    return run, {"status": int(status), "seconds": float(total), "downloaded": int(float(down)),
                 "uploaded": int(float(up)), "http_version": version}


_DURATION = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _DURATION[match.group(2)]


def wrk(url: str, headers: Mapping[str, str], connections: int, duration: float, threads: int = 2,
        script: Path | None = None) -> dict[str, Any]:
    """Run wrk (with a Lua `script`, e.g. one that sets the method); return requests/s, latency percentiles
    (ms), errors, and wrk's own CPU use."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    run = run_tool(argv, timeout=duration + 60)
    if run.returncode != 0:
        raise BenchError(f"wrk failed ({run.returncode}): {run.stderr.strip()[:500]} {run.stdout[:500]}")
    text = run.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in ([\d.]+\w+)", text)
    if not rps or not total:
        raise BenchError(f"cannot parse wrk output:\n{text}")
    latency = {f"p{p}": _seconds(v) * 1000 for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", text, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)),
        "seconds": _seconds(total.group(2)),
        "latency_ms": latency,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "wrk_cpu_seconds": round(run.cpu, 3),
        "wrk_cpu_share_of_one_core": round(run.cpu / max(run.wall, 1e-9), 3),
        "wrk_threads": threads,
    }
