"""The log handlers of a server process (each Hypercorn worker calls this once; calling again replaces them).

    secreg.access  -> stdout, one line per request (format from log.accesslog.format), not propagated
    secreg.audit   -> stderr as JSON lines, plus log.audit.file (append, 0600) when set, not propagated
    everything else -> the root handler on stderr, which `secreg serve` installs (installed here too when a
                       spawned worker has none)
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from secreg.config import Settings
from secreg.observability import accesslog, audit

__all__ = ["ROOT_FORMAT", "configure_audit_file", "configure_server_logging"]

ROOT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries whose INFO/DEBUG lines carry secrets (below): kept at WARNING whatever log.level says.
NOISY_LOGGERS = ("httpx", "httpcore", "hpack", "botocore", "urllib3")
_MARK = "_secreg_handler"


def _replace_handlers(logger: logging.Logger, handlers: list[logging.Handler]) -> None:
    for old in [h for h in logger.handlers if getattr(h, _MARK, False)]:
        logger.removeHandler(old)
        old.close()  # closes the audit file; a StreamHandler leaves stdout / stderr open
    for handler in handlers:
        setattr(handler, _MARK, True)
        logger.addHandler(handler)


def configure_server_logging(settings: Settings) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format=ROOT_FORMAT)
    root.setLevel(settings.log_level.upper())
    # httpx logs every request's full URL at INFO: with the pull-through cache that is each upstream request,
    # query included, and the storage URLs upstreams redirect blob downloads to carry signatures there.
    # hpack logs every HTTP/2 header it decodes at DEBUG, a client's Authorization included; botocore and urllib3
    # log the object store's signed requests and URLs at DEBUG.
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)

    access = logging.getLogger(accesslog.LOGGER)
    access_handler = accesslog.LineHandler(sys.stdout)
    access_handler.setFormatter(logging.Formatter("%(message)s"))
    _replace_handlers(access, [access_handler] if settings.access_log_enabled else [])
    access.setLevel(logging.INFO)
    access.propagate = False
    access.disabled = not settings.access_log_enabled

    audit_logger = logging.getLogger(audit.LOGGER)
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setFormatter(audit.AuditFormatter())
    handlers: list[logging.Handler] = [stderr_handler]
    if settings.audit_file is not None:
        handlers.append(audit.open_audit_file(settings.audit_file))
    _replace_handlers(audit_logger, handlers)
    audit_logger.setLevel(logging.INFO)
    audit_logger.propagate = False


def configure_audit_file(path: Path | None) -> None:
    """For CLI commands that change users: their audit events go to log.audit.file, when set (the one
    place the server and the CLI share); nothing is printed."""
    if path is None:
        return
    audit_logger = logging.getLogger(audit.LOGGER)
    _replace_handlers(audit_logger, [audit.open_audit_file(path)])
    audit_logger.setLevel(logging.INFO)
    audit_logger.propagate = False
