"""The access log: one line per request on logger `secreg.access`, written to stdout.

JSON (default, `log.accesslog.format: json`):

    {"time": "2025-01-02T03:04:05.678Z", "request_id": "9f0c...", "client": "::1", "user": "alice",
     "method": "PUT", "path": "/v2/alice/app/manifests/1.0", "route": "/v2/{name:path}/manifests/{reference}",
     "repository": "alice/app", "action": "push", "status": 201, "bytes_in": 1234, "bytes_out": 0,
     "duration": 0.0123, "user_agent": "docker/20.10.24 ...", "cache": "-"}

Text (`format: text`): the same fields on one line, space separated,
`TIME ID CLIENT USER "METHOD PATH" STATUS IN OUT DURATION REPOSITORY ACTION "AGENT" CACHE`.
`cache` is how the pull-through cache answered a pull (hit, miss, revalidated, stale; its `X-Cache`), "-"
for everything else.
The query string is never logged (upload URLs carry signed state in it). `user` and `repository` are "-"
when there is none. `time` is when the line was recorded (the response's last message). The server writes the
lines of one event-loop iteration together, with one write when the iteration's callbacks are done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from secreg.observability.audit import utc_now_text

__all__ = ["LOGGER", "AccessRecord", "formatter_for"]

LOGGER = "secreg.access"
_MAX_PATH = 512
_MAX_AGENT = 256


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs microseconds per request
class AccessRecord:
    request_id: str
    client: str
    user: str
    method: str
    path: str
    route: str
    repository: str
    action: str
    status: int
    bytes_in: int
    bytes_out: int
    duration: float
    user_agent: str
    cache: str = "-"


_quote = json.encoder.encode_basestring_ascii  # C speed, JSON-safe


def _json(record: AccessRecord, at: float | None = None) -> str:
    # Built by hand: json.dumps of the whole dict costs more than the rest of the line (hot path).
    return (
        f'{{"time": "{utc_now_text(at)}", "request_id": {_quote(record.request_id)}, '
        f'"client": {_quote(record.client)}, "user": {_quote(record.user)}, "method": {_quote(record.method)}, '
        f'"path": {_quote(record.path[:_MAX_PATH])}, "route": {_quote(record.route)}, '
        f'"repository": {_quote(record.repository)}, "action": {_quote(record.action)}, '
        f'"status": {int(record.status)}, "bytes_in": {int(record.bytes_in)}, '
        f'"bytes_out": {int(record.bytes_out)}, "duration": {round(record.duration, 6)!r}, '
        f'"user_agent": {_quote(record.user_agent[:_MAX_AGENT])}, "cache": {_quote(record.cache)}}}'
    )


def _text(record: AccessRecord, at: float | None = None) -> str:
    path = _quote(f"{record.method} {record.path[:_MAX_PATH]}")
    agent = _quote(record.user_agent[:_MAX_AGENT] or "-")
    return (
        f"{utc_now_text(at)} {record.request_id} {record.client} {record.user} {path} {record.status} "
        f"{record.bytes_in} {record.bytes_out} {record.duration:.6f} {record.repository} {record.action} {agent} "
        f"{record.cache}"
    )


def formatter_for(fmt: str) -> Callable[[AccessRecord, float | None], str]:
    """The line renderer of `log.accesslog.format` ("json" or "text"): (record, when it was recorded; None:
    now) -> line."""
    return _text if fmt == "text" else _json


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The server's access-log handler (stdout). `write_line` takes a finished line without a LogRecord."""

    def write_line(self, line: str) -> None:
        with self.lock:  # type: ignore[union-attr]
            try:
                self.stream.write(line + self.terminator)
                self.flush()
            except Exception:  # noqa: BLE001 - as Handler.handleError: a full disk must not fail requests
                self.handleError(logging.makeLogRecord({"msg": line}))


class AccessLog:
    """Writes records on `secreg.access`; cheap when the logger is off.

    With the server's own handler (one `LineHandler`) and a running event loop, a record is kept until the loop's
    current iteration has run its callbacks, then that iteration's lines are rendered and written with one write
    (`flush`): a reader tailing the log sees a line within the iteration that sent the response, and a request
    costs no write system call of its own (writing and rendering one line at a time were ~20 us of a small
    request's ~65 us in the app, in process; ~9 us of it went).
    """

    def __init__(self, fmt: str, enabled: bool = True) -> None:
        self._render = formatter_for(fmt)
        self._logger = logging.getLogger(LOGGER)
        self.enabled = enabled
        self._pending: list[tuple[AccessRecord, float]] = []
        self._handler: LineHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def write(self, record: AccessRecord) -> None:
        logger = self._logger
        if not self.enabled or logger.disabled or not logger.isEnabledFor(logging.INFO):
            return
        handlers = logger.handlers
        if len(handlers) == 1 and isinstance(handlers[0], LineHandler) and not logger.filters:
            # The server's own setup: building a LogRecord (pid, thread, caller...) would cost more than
            # the rest of the request's bookkeeping together. Measured: ~15 us less per request.
            handler = handlers[0]
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                handler.write_line(self._render(record, None))
                return
            if self._pending and (loop is not self._loop or handler is not self._handler):
                self.flush()  # kept for a loop that stopped before its next iteration, or the old handler
            if not self._pending:
                self._loop, self._handler = loop, handler
                loop.call_soon(self.flush)
            self._pending.append((record, time.time()))
            return
        logger.handle(logger.makeRecord(LOGGER, logging.INFO, __file__, 0, self._render(record, None), (), None))

    def flush(self) -> None:
        """Write the lines kept so far (the loop calls this once per iteration that recorded any; the app's
        shutdown calls it too)."""
        pending, handler = self._pending, self._handler
        if not pending or handler is None:
            return
        self._pending = []
        render = self._render
        handler.write_line("\n".join([render(record, at) for record, at in pending]))
