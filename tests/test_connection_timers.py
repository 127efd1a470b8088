"""The idle and header timers of `secreg.connections.LimitedTCPServer` on a loop whose clock the test moves: a
request moves a deadline instead of arming and cancelling a timer, and the one timer armed fires at the earliest
deadline, re-arms itself for a later one, and closes only a connection whose deadline has passed. (Real servers
over TLS check the same timeouts end to end in tests/api/test_slow_clients.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import hypercorn.config
import pytest
from hypercorn.asyncio.worker_context import WorkerContext

from secreg import connections


class _ClockLoop(asyncio.SelectorEventLoop):
    now = 1000.0

    def time(self) -> float:
        return self.now


class _Transport:
    aborted = False

    def abort(self) -> None:
        self.aborted = True


class _Writer:
    def __init__(self) -> None:
        self.transport = _Transport()


@pytest.fixture
def loop() -> Iterator[_ClockLoop]:
    loop = _ClockLoop()
    yield loop
    loop.close()


def _connection(loop: _ClockLoop, closed: list[str]) -> Any:
    connection: Any = connections.LimitedTCPServer.__new__(connections.LimitedTCPServer)
    connection.loop = loop
    connection.context = WorkerContext(None)
    connection.config = hypercorn.config.Config()
    connection.config.keep_alive_timeout = 10
    connection.writer = _Writer()

    async def close() -> None:
        closed.append("closed")

    connection._initiate_server_close = close
    return connection


def _at(loop: _ClockLoop, now: float) -> None:
    """Move the clock to `now` and run what is due."""
    loop.now = now
    for _ in range(3):
        loop.run_until_complete(asyncio.sleep(0))


def test_the_idle_timer_is_armed_once_and_follows_the_latest_idle_spell(loop: _ClockLoop) -> None:
    closed: list[str] = []
    connection = _connection(loop, closed)
    connection._watch_idle(True)  # opened: idle until 1010
    timer = connection._idle_timer
    for start in (1002.0, 1004.0, 1006.0):  # three requests, each done a second later
        _at(loop, start)
        connection._watch_idle(False)
        _at(loop, start + 1)
        connection._watch_idle(True)
        assert connection._idle_timer is timer  # no timer armed or cancelled per request
    _at(loop, 1010.0)  # the first deadline has passed, but the connection was used since: idle until 1017
    assert closed == [] and connection._idle_timer is not None and connection._idle_timer is not timer
    _at(loop, 1016.9)
    assert closed == []
    _at(loop, 1017.0)
    assert closed == ["closed"] and connection._idle_timer is None


def test_a_connection_busy_when_its_timer_fires_is_not_closed_and_rearms_when_idle(loop: _ClockLoop) -> None:
    closed: list[str] = []
    connection = _connection(loop, closed)
    connection._watch_idle(True)
    _at(loop, 1005.0)
    connection._watch_idle(False)  # a long request, past the idle timeout
    _at(loop, 1030.0)
    assert closed == [] and connection._idle_timer is None
    connection._watch_idle(True)
    assert connection._idle_timer is not None
    _at(loop, 1039.0)
    assert closed == []
    _at(loop, 1040.0)
    assert closed == ["closed"]


def test_a_stopping_server_closes_idle_connections_at_once_and_drops_their_timer(loop: _ClockLoop) -> None:
    closed: list[str] = []
    connection = _connection(loop, closed)
    connection._watch_idle(True)
    timer = connection._idle_timer
    connection._idle_expired()  # what the server's stop does to every idle connection
    assert timer.cancelled() and connection._idle_timer is None and connection._idle_deadline is None
    _at(loop, 1020.0)
    assert closed == ["closed"]


def test_the_header_timer_cuts_only_headers_that_are_late(loop: _ClockLoop) -> None:
    connection = _connection(loop, [])
    connection.idle = True
    # first bytes of a request at 1000 (as `_read_data` arms it), header timeout 20 s
    connection._header_deadline = 1020.0
    connection._header_timer = loop.call_at(1020.0, connection._header_due)
    _at(loop, 1001.0)
    connection._header_deadline = None  # its headers were complete (Updated(idle=False))
    connection.idle = False
    _at(loop, 1005.0)
    connection.idle = True  # answered; the next request's first bytes at 1010, its headers due by 1030
    connection._header_deadline = 1030.0
    _at(loop, 1020.0)  # the timer armed for the first request finds a later deadline: re-armed for it
    assert not connection.writer.transport.aborted and connection._header_timer is not None
    _at(loop, 1029.0)
    assert not connection.writer.transport.aborted
    _at(loop, 1030.0)
    assert connection.writer.transport.aborted and connection._header_deadline is None
