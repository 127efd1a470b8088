"""First start: make the auth directory usable so a fresh registry is never open and never unusable."""

from __future__ import annotations

import logging
import secrets

from secreg.auth.groups import GroupStore, groups_file
from secreg.auth.policy import DEFAULT_POLICY
from secreg.auth.users import UserStore
from secreg.auth.watched import locked
from secreg.config import Settings
from secreg.files import atomic_write

__all__ = ["ADMIN_GROUP", "ADMIN_USER", "bootstrap_auth"]

log = logging.getLogger("secreg.auth")

ADMIN_USER = "admin"
ADMIN_GROUP = "admins"


def bootstrap_auth(settings: Settings) -> str | None:
    """Create what is missing: the auth directory (0700), the default policy, and, when the htpasswd file
    is missing or empty, user `admin` with a generated password in group `admins`.

    Returns the generated password (the caller shows it once) or None when there were users already.
    Safe to call on every start.
    """
    auth = settings.auth
    auth.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in (auth.htpasswd, auth.policy, groups_file(auth)):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    with locked(auth.policy):
        if not auth.policy.exists():
            atomic_write(auth.policy, DEFAULT_POLICY.encode())
            log.info("wrote the default access policy to %s", auth.policy)

    users = UserStore(auth.htpasswd)
    if users.users():
        return None
    password = secrets.token_urlsafe(18)
    # Checked again under the file lock: of two workers starting together only one creates the admin.
    if not users.add(ADMIN_USER, password, only_if_empty=True):
        return None
    GroupStore(groups_file(auth)).add(ADMIN_USER, ADMIN_GROUP)
    log.info("created user %s (group %s) in %s", ADMIN_USER, ADMIN_GROUP, auth.htpasswd)
    return password
