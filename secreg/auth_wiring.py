"""Connects the auth package to the app (token routes, middleware, catalog filter). Filled in with issue 4."""

from __future__ import annotations

import logging

from starlette.applications import Starlette

from secreg.config import Settings

log = logging.getLogger("secreg")


def wire_auth(app: Starlette, settings: Settings, role: str) -> None:
    if not settings.auth.enabled:
        return
