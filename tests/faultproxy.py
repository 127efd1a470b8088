"""An HTTP/1.1 proxy in front of an object server that injects faults: a 503 answer to chosen requests, a
response body cut off part way, or a request held until the test releases it (a slow store, ordered by events
instead of timings). One request per client connection (it answers `Connection: close`)."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Fault:
    """Matches a request line (`PUT /bucket/key?partNumber=2&uploadId=... HTTP/1.1`)."""

    pattern: str
    times: int = 1
    action: str = "503"  # "503"; "cut": forward only the first `cut_after` body bytes, then drop; "hold": see below
    cut_after: int = 1024 * 1024
    hits: int = 0
    # "hold": `arrived` is set when a matching request reached the proxy; it is forwarded once `release` is set
    # (or after `hold_max` seconds, so a failing test cannot hang the object store's clients for ever).
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    hold_max: float = 60.0


@dataclass
class FaultProxy:
    upstream: tuple[str, int]
    faults: list[Fault] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)

    def start(self) -> str:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def close(self) -> None:
        self._stop.set()
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _match(self, line: str) -> Fault | None:
        for fault in self.faults:
            if fault.hits < fault.times and re.search(fault.pattern, line):
                fault.hits += 1
                return fault
        return None

    def _serve(self, client: socket.socket) -> None:
        with client:
            head = _read_until(client.recv, b"\r\n\r\n")
            if head is None:
                return
            header_block, rest = head
            lines = header_block.decode("latin-1").split("\r\n")
            self.seen.append(lines[0])
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = rest
            while len(body) < length:
                more = client.recv(1024 * 1024)
                if not more:
                    return
                body += more
            fault = self._match(lines[0])
            if fault is not None and fault.action == "503":
                message = (b"<?xml version=\"1.0\"?><Error><Code>ServiceUnavailable</Code>"
                           b"<Message>injected</Message></Error>")
                client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
                               b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(message), message))
                return
            if fault is not None and fault.action == "hold":
                fault.arrived.set()
                fault.release.wait(fault.hold_max)
            kept = [line for line in lines if not line.lower().startswith("connection:")]
            request = ("\r\n".join(kept) + "\r\nConnection: close\r\n\r\n").encode("latin-1") + body
            with socket.create_connection(self.upstream) as upstream:
                upstream.sendall(request)
                sent = 0
                limit = fault.cut_after if fault is not None and fault.action == "cut" else None
                header_done = False
                while chunk := upstream.recv(1024 * 1024):
                    if limit is not None:
                        if not header_done and b"\r\n\r\n" in chunk:
                            header_done = True
                            start = chunk.index(b"\r\n\r\n") + 4
                            sent -= start
                        if header_done and sent + len(chunk) > limit:
                            client.sendall(chunk[: max(limit - sent, 0)])
                            client.shutdown(socket.SHUT_RDWR)
                            return
                    client.sendall(chunk)
                    sent += len(chunk)


def _read_until(recv: Callable[[int], bytes], marker: bytes) -> tuple[bytes, bytes] | None:
    data = b""
    while marker not in data:
        more = recv(65536)
        if not more:
            return None
        data += more
    head, _, rest = data.partition(marker)
    return head, rest
