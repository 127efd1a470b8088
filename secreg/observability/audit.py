"""Security events as structured records on logger `secreg.audit`.

`event("login.failed", user="bob", client="::1")` logs one record whose message reads
`login.failed user=bob client=::1` (for humans and caplog) and whose `audit` attribute holds the fields;
`AuditFormatter` writes that as one JSON line: `{"time": ..., "event": "login.failed", "user": "bob", ...}`.

Events: login.ok, login.failed, login.throttled, refresh.refused, refresh.revoked (one token, or `all` of a
user's), scope.denied (token server downscoped a
request), access.denied (registry refused a token: invalid_token / insufficient_scope), manifest.push,
manifest.delete, blob.delete, user.add, user.passwd, user.delete, user.groups (CLI), policy.loaded,
policy.invalid. Passwords and tokens are never fields.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

__all__ = ["LOGGER", "AuditFormatter", "event", "open_audit_file"]

LOGGER = "secreg.audit"
_log = logging.getLogger(LOGGER)
# A process that configured no handler (a CLI command, a test) drops events instead of printing warnings
# through logging's last-resort handler; servers add theirs (logconfig.py), records still propagate.
_log.addHandler(logging.NullHandler())
_PLAIN = re.compile(r"^[A-Za-z0-9._:/@\[\]+-]+\Z")
_WARNING_EVENTS = frozenset({"login.failed", "login.throttled", "refresh.refused", "access.denied",
                             "policy.invalid"})


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if _PLAIN.match(text) else json.dumps(text)


class _Summary:
    """The message `name k=v ...`, built only when a handler asks for it (`AuditFormatter` does not)."""

    __slots__ = ("fields", "name")

    def __init__(self, name: str, fields: dict[str, Any]) -> None:
        self.name = name
        self.fields = fields

    def __str__(self) -> str:
        return " ".join([self.name, *(f"{k}={_shown(v)}" for k, v in self.fields.items())])


def event(name: str, **fields: Any) -> None:
    """Record one security event; None-valued fields are left out."""
    present = {k: v for k, v in fields.items() if v is not None}
    level = logging.WARNING if name in _WARNING_EVENTS else logging.INFO
    if not _log.isEnabledFor(level):
        return
    # `Logger.log` would also walk the stack for the caller's file and line, which no audit line shows
    # (the token endpoint records one event per request: the hot path).
    record = _log.makeRecord(LOGGER, level, __file__, 0, _Summary(name, present), (), None, "event",
                             {"audit": {"event": name, **present}})
    _log.handle(record)


_second: tuple[int, str] = (0, "")


def utc_now_text(now: float | None = None) -> str:
    """`2025-01-02T03:04:05.678Z` of `now` (default: the current time); the part up to the second is reused
    within a second (hot path)."""
    global _second
    if now is None:
        now = time.time()
    whole = int(now)
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int((now - whole) * 1000):03d}Z"


class AuditFormatter(logging.Formatter):
    """One JSON object per line: time, level, event and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "audit", None)
        line: dict[str, Any] = {"time": utc_now_text(), "level": record.levelname.lower()}
        if isinstance(fields, dict):
            line.update(fields)
        else:  # a plain message logged on this logger by other code
            line["event"] = "message"
            line["message"] = record.getMessage()
        return _json_line(line)


_quote = json.encoder.encode_basestring_ascii  # C speed; what json.dumps writes for a str


def _json_line(line: dict[str, Any]) -> str:
    """`json.dumps(line, default=str)`, with the (usual) string fields written directly: same text, a third of
    the time."""
    if not all(isinstance(k, str) for k in line):
        return json.dumps(line, default=str)
    parts = [f"{_quote(k)}: {_quote(v) if type(v) is str else json.dumps(v, default=str)}" for k, v in line.items()]
    return "{" + ", ".join(parts) + "}"


def open_audit_file(path: Path) -> logging.Handler:
    """An append-only handler on `path`, created 0600 (an existing file keeps its mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600))
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(AuditFormatter())
    return handler
