"""Connects the auth package to the app: token routes, the authorization middleware, the catalog filter."""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette

from secreg.auth.groups import GroupStore, groups_file
from secreg.auth.middleware import AuthMiddleware, Identity
from secreg.auth.policy import PolicyStore
from secreg.auth.server import TOKEN_PATH, TokenService, token_routes
from secreg.auth.tokens import TokenVerifier
from secreg.config import Settings

log = logging.getLogger("secreg")


def wire_auth(app: Starlette, settings: Settings, role: str) -> None:
    if not settings.auth.enabled:
        log.warning("authentication is OFF (auth.enabled: false): anyone who can reach this registry may "
                    "push, pull and delete")
        return
    if role in ("all", "auth"):
        service = TokenService.from_settings(settings)
        app.router.routes[0:0] = token_routes(service)
    if role in ("all", "registry"):
        token = settings.auth.token
        realm = token.realm or (f"{settings.public_url}{TOKEN_PATH}" if settings.public_url else "")
        if role == "registry" and not realm:
            log.warning("--role registry without auth.token.realm: clients are sent to %s on this host",
                        TOKEN_PATH)
        app.state.catalog_filter = catalog_filter(settings)
        app.add_middleware(
            AuthMiddleware,
            verifier=TokenVerifier.from_settings(token),
            resolve=app.state.resolver,
            realm=realm,
            service=token.service,
        )


def catalog_filter(settings: Settings) -> Any:
    """The catalog shows a caller only the repositories the policy lets them pull."""
    policy = PolicyStore(settings.auth.policy)
    groups = GroupStore(groups_file(settings.auth))

    def visible(identity: Identity | None, names: list[str]) -> list[str]:
        if identity is None:
            return names
        member_of = groups.groups_of(identity.subject) if identity.subject else frozenset()
        current = policy.current
        return [n for n in names if current.decide(identity.subject, member_of, "repository", n, "pull").allowed]

    return visible
