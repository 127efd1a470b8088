"""`GET /healthz` (the process answers) and `GET /readyz` (it can do its work): no auth on either.

/readyz checks the storage (a small file written, read back and deleted under the storage root, outside
every repository) and, with auth on, the token key; 200 when every check passes, else 503. The body names
each check: `{"status": "ok" | "unavailable", "checks": {"storage": "ok", "token_key": "..."}}`. Failure
reasons in the body are short (no paths: the endpoint is public); the server log has the details.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
from starlette.requests import Request
from starlette.responses import Response

from secreg.api.base import json_response
from secreg.registry.model import RegistryModel

log = logging.getLogger("secreg.health")

PROBE_TIMEOUT = 10.0
_NO_STORE = {"Cache-Control": "no-store"}

# Set by the auth wiring: None when the token key is usable, else why not.
TokenCheck = Callable[[], str | None]


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"}, headers=_NO_STORE)


async def readyz(request: Request) -> Response:
    checks: dict[str, str] = {}
    model: RegistryModel | None = request.app.state.registry
    if model is not None:
        checks["storage"] = await _storage(model)
    token_check: TokenCheck | None = getattr(request.app.state, "token_check", None)
    if token_check is not None:
        checks["token_key"] = token_check() or "ok"
    ready = all(result == "ok" for result in checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    return json_response(body, status=200 if ready else 503, headers=_NO_STORE)


async def _storage(model: RegistryModel) -> str:
    try:
        with anyio.fail_after(PROBE_TIMEOUT):
            await model.check_ready()
    except TimeoutError:
        log.warning("readyz: the storage probe took longer than %.0f s", PROBE_TIMEOUT)
        return f"failed: no answer within {PROBE_TIMEOUT:.0f} s"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; the log says which
        log.warning("readyz: storage probe failed: %s", exc)
        errno = getattr(exc, "errno", None)
        return f"failed: {type(exc).__name__}" + (f" (errno {errno})" if errno else "")
    return "ok"
