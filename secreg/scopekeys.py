"""Keys of the values layers leave for each other in an ASGI request scope.

The auth middleware and the token server write them; the observer (metrics, access log, audit) and the
handlers read them. Both sides import this module, never each other.
"""

from __future__ import annotations

__all__ = ["IDENTITY_KEY", "REQUEST_ID_KEY", "ROUTE_MATCH_KEY", "USER_KEY"]

IDENTITY_KEY = "secreg.identity"  # the verified `secreg.auth.middleware.Identity` of a registry request
REQUEST_ID_KEY = "secreg.request_id"  # set by the observer for every request
USER_KEY = "secreg.user"  # who logged in at the token endpoint, which has no Identity
# (route, child scope) of the router's own route that fully matched the request, found by the auth middleware's
# resolver: the router dispatches to it without matching the path against its table a second time
ROUTE_MATCH_KEY = "secreg.route_match"
