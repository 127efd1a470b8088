"""A 1 GiB blob pushed and pulled through a real server must not grow its resident memory by more than 64 MiB."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests.server import run_secreg

GIB = 1024 * 1024 * 1024
PIECE = 1024 * 1024
LIMIT = 64 * 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class PeakSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_one_gib_push_and_pull_in_constant_memory(tmp_path: Path) -> None:
    piece = os.urandom(PIECE)
    expected = hashlib.sha256()
    for _ in range(GIB // PIECE):
        expected.update(piece)
    digest = f"sha256:{expected.hexdigest()}"

    def body() -> Iterator[bytes]:
        for _ in range(GIB // PIECE):
            yield piece

    config = {"auth": {"enabled": False}}
    with run_secreg(tmp_path, config) as server, server.client() as client:
        pid = server.process.pid
        assert client.get("/v2/").status_code == 200
        baseline = rss_bytes(pid)
        with PeakSampler(pid) as push_peak:
            r = client.post("/v2/big/blob/blobs/uploads/", params={"digest": digest}, content=body(),
                            headers={"Content-Length": str(GIB)})
        assert r.status_code == 201, r.text
        received = hashlib.sha256()
        size = 0
        with PeakSampler(pid) as pull_peak, client.stream("GET", f"/v2/big/blob/blobs/{digest}") as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes(PIECE):
                received.update(chunk)
                size += len(chunk)
        assert size == GIB and f"sha256:{received.hexdigest()}" == digest
        growth = max(push_peak.peak, pull_peak.peak) - baseline
        print(f"baseline RSS {baseline / 2**20:.1f} MiB, push peak {push_peak.peak / 2**20:.1f} MiB, "
              f"pull peak {pull_peak.peak / 2**20:.1f} MiB")
        assert growth <= LIMIT, f"server RSS grew by {growth / 2**20:.1f} MiB"
