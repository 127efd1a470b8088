"""A keep-alive HTTP/1.1 load generator for HEAD requests, which neither wrk 4.1 nor h2load 1.52 can send
(both wait for the body a HEAD response announces), and ab sends as HTTP/1.0 (no keep-alive with Hypercorn).

`python -m bench.headload URL CA CONNECTIONS SECONDS [HEADER ...]` runs the connections on asyncio in this one
process and prints one JSON line: completed responses, their statuses, seconds and requests/s. The bench runs
two of these processes side by side (like wrk -t2) and sums them.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
import urllib.parse
from collections import Counter


async def _connection(host: str, port: int, context: ssl.SSLContext, request: bytes, deadline: float,
                      statuses: Counter[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname="localhost")
    try:
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            statuses[int(head.split(b" ", 2)[1])] += 1
    finally:
        writer.close()


async def _run(url: str, ca: str, connections: int, seconds: float, headers: list[str]) -> dict[str, object]:
    parts = urllib.parse.urlsplit(url)
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["http/1.1"])
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"HEAD {target} HTTP/1.1", f"Host: {parts.netloc}", *headers, "", ""]
    request = "\r\n".join(lines).encode()
    statuses: Counter[int] = Counter()
    host = (parts.hostname or "127.0.0.1")
    start = time.monotonic()
    await asyncio.gather(*(_connection(host, parts.port or 443, context, request, start + seconds, statuses)
                           for _ in range(connections)))
    elapsed = time.monotonic() - start
    total = sum(statuses.values())
    return {"requests": total, "statuses": {str(k): v for k, v in statuses.items()}, "seconds": elapsed,
            "rps": total / elapsed}


def main(argv: list[str]) -> int:
    url, ca, connections, seconds, *headers = argv
    print(json.dumps(asyncio.run(_run(url, ca, int(connections), float(seconds), headers))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
