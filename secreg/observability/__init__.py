"""What operators watch: Prometheus metrics, the access log, the audit log, and the middleware that feeds them.

    metrics.py     the metric families, `record_gc(report)`, the /metrics renderer (multiprocess aware)
    accesslog.py   one line per request on logger `secreg.access` (stdout), JSON or text
    audit.py       security events as JSON lines on logger `secreg.audit` (stderr, optionally a 0600 file)
    middleware.py  pure ASGI: request id, timing, byte counts -> metrics, access log, push/delete audit
    logconfig.py   the handlers of a server process (called once per worker)
"""


from secreg.scopekeys import REQUEST_ID_KEY, USER_KEY

__all__ = ["REQUEST_ID_KEY", "USER_KEY"]
