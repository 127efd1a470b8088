"""Driving Hypercorn's HTTP/1.1 protocol (`H11Protocol`, with secreg's tuning applied) in memory: the bytes a
client sends go in read by read, what would reach the socket comes out."""

from __future__ import annotations

import asyncio
from typing import Any

import h11

from secreg import hypercorn_tuning


def h11_config() -> Any:
    """A Hypercorn config with secreg's tuning applied, without a Date header or an access log (stable output)."""
    import hypercorn.config

    assert hypercorn_tuning.apply()
    config = hypercorn.config.Config()
    config.include_date_header = False
    config.accesslog = None
    return config


def serve_h11(app: Any, config: Any, pieces: list[bytes]) -> list[Any]:
    """Hypercorn's H11Protocol serving the ASGI `app` on the reads `pieces`, until the connection is idle with
    nothing left to read, or closed: what reached the socket (bytes, "idle" between requests, "closed")."""
    from hypercorn.app_wrappers import ASGIWrapper
    from hypercorn.asyncio.task_group import TaskGroup
    from hypercorn.asyncio.worker_context import WorkerContext
    from hypercorn.events import Closed, RawData, Updated
    from hypercorn.protocol.h11 import H11Protocol
    from hypercorn.typing import ConnectionState

    writes: list[Any] = []

    async def main() -> None:
        done = asyncio.Event()

        async def send(event: Any) -> None:
            if isinstance(event, RawData):
                writes.append(event.data)
            elif isinstance(event, Closed):
                writes.append("closed")
                done.set()
            elif isinstance(event, Updated) and event.idle:
                writes.append("idle")
                if protocol.connection.their_state is h11.IDLE and not protocol.connection._receive_buffer:
                    done.set()

        async with TaskGroup(asyncio.get_running_loop()) as group:
            protocol = H11Protocol(ASGIWrapper(app), config, WorkerContext(None), group, ConnectionState({}),
                                   True, ("127.0.0.1", 1), ("127.0.0.1", 2), send)
            for piece in pieces:
                await protocol.handle(RawData(piece))
                await asyncio.sleep(0)
            await asyncio.wait_for(done.wait(), 10)
            await protocol.handle(Closed())

    asyncio.run(main())
    return writes
