"""`GET /metrics`: Prometheus text format, for a scraper holding `metrics.token` or, without one, loopback only.

With `metrics.token` set, the scraper sends `Authorization: Bearer <token>` (Prometheus:
`authorization: {credentials: ...}`), compared in constant time; anything else is 401. Without a token
only clients on 127.0.0.0/8 or ::1 may scrape (403 otherwise): behind a reverse proxy every client looks
local, so set a token there.
"""

from __future__ import annotations

import hmac
import ipaddress

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from secreg.api.base import json_response
from secreg.observability.metrics import CONTENT_TYPE, Metrics


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _refused(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status=status, headers=headers)


async def metrics_endpoint(request: Request) -> Response:
    token: str = request.app.state.settings.metrics_token
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return _refused(401, "a bearer token (metrics.token) is required",
                            {"WWW-Authenticate": 'Bearer realm="secreg-metrics"'})
    elif not _loopback(request.client.host if request.client else None):
        return _refused(403, "metrics are served to loopback clients only unless metrics.token is set")
    metrics: Metrics = request.app.state.metrics
    body = await anyio.to_thread.run_sync(metrics.render)
    return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})
