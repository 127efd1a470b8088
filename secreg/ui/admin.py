"""Administration pages (group `admins` only): users, the policy and its explainer, storage and GC."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from starlette.responses import Response

from secreg.auth.accounts import AccountError, Accounts, generate_password
from secreg.auth.policy import ACTIONS
from secreg.observability import audit
from secreg.ui.source import RegistrySource
from secreg.ui.web import Context, render


def _accounts(ctx: Context) -> Accounts:
    accounts: Accounts = ctx.request.app.state.accounts
    return accounts


def _by(ctx: Context) -> str:
    """Who made a change, for the audit log: the UI user (the CLI records the operating-system user)."""
    return f"ui:{ctx.viewer.subject}"


def _groups_field(text: str) -> list[str]:
    return [g for g in text.replace(",", " ").split() if g]


async def users(ctx: Context, *, message: str = "", error: str = "", password: str = "", status: int = 200,
                password_for: str = "") -> Response:
    accounts = _accounts(ctx)
    members = accounts.groups
    rows = [(name, sorted(members.groups_of(name))) for name in accounts.users.users()]
    return render(ctx, "users.html", {"rows": rows, "message": message, "error": error, "password": password,
                                      "password_for": password_for}, status=status)


async def add_user(ctx: Context) -> Response:
    form = ctx.form
    name = form.get("name", "").strip()
    generated = form.get("generate") == "on" or not form.get("password")
    password = generate_password() if generated else form.get("password", "")
    try:
        await anyio.to_thread.run_sync(lambda: _accounts(ctx).add(name, password, _groups_field(form.get("groups", "")),
                                                                  by=_by(ctx)))
    except AccountError as exc:
        return await users(ctx, error=str(exc), status=400)
    return await users(ctx, message=f"created user {name}", password=password if generated else "",
                       password_for=name)


async def change_password(ctx: Context) -> Response:
    name: str = ctx.request.path_params["user"]
    form = ctx.form
    generated = form.get("generate") == "on" or not form.get("password")
    password = generate_password() if generated else form.get("password", "")
    try:
        await anyio.to_thread.run_sync(lambda: _accounts(ctx).set_password(name, password, by=_by(ctx)))
    except AccountError as exc:
        return await users(ctx, error=str(exc), status=400)
    return await users(ctx, message=f"changed the password of {name}; its docker logins no longer work",
                       password=password if generated else "", password_for=name)


async def revoke_logins(ctx: Context) -> Response:
    """`secreg user revoke`: every refresh token (docker login) of the user stops working; the password stays."""
    name: str = ctx.request.path_params["user"]
    try:
        await anyio.to_thread.run_sync(lambda: _accounts(ctx).revoke(name, by=_by(ctx)))
    except AccountError as exc:
        return await users(ctx, error=str(exc), status=400)
    return await users(ctx, message=f"revoked the docker logins of {name}: they must log in again")


async def delete_user(ctx: Context) -> Response:
    name: str = ctx.request.path_params["user"]
    if name == ctx.viewer.subject:
        return await users(ctx, error="you cannot delete the account you are logged in with", status=400)
    try:
        await anyio.to_thread.run_sync(lambda: _accounts(ctx).delete(name, by=_by(ctx)))
    except AccountError as exc:
        return await users(ctx, error=str(exc), status=400)
    return await users(ctx, message=f"deleted user {name}")


async def set_groups(ctx: Context) -> Response:
    name: str = ctx.request.path_params["user"]
    accounts = _accounts(ctx)
    wanted = set(_groups_field(ctx.form.get("groups", "")))
    current = set(accounts.groups.groups_of(name))
    try:
        await anyio.to_thread.run_sync(
            lambda: accounts.change_groups(name, sorted(wanted - current), sorted(current - wanted), by=_by(ctx)))
    except AccountError as exc:
        return await users(ctx, error=str(exc), status=400)
    return await users(ctx, message=f"{name}: groups {', '.join(sorted(wanted)) or '-'}")


async def policy(ctx: Context) -> Response:
    """The rules in force and `secreg policy check` as a form (a GET: asking changes nothing)."""
    store = ctx.request.app.state.policy
    groups = ctx.request.app.state.groups
    current = store.current
    params = ctx.request.query_params
    user = params.get("user", "").strip()[:64]
    repository = params.get("repository", "").strip()[:255]
    action = params.get("action", "pull")
    verdict: dict[str, Any] | None = None
    if user and repository and action in (*ACTIONS, "*"):
        subject = "" if user == "anonymous" else user
        member_of = groups.groups_of(subject) if subject else frozenset()
        text = current.explain(subject, repository, action, member_of)
        verdict = {"allowed": text.startswith("allow"), "text": text, "groups": sorted(member_of),
                   "what": "list the catalog" if repository == "_catalog" else f"{action} {repository}"}
    return render(ctx, "policy.html", {
        "path": str(store.path), "rules": [r.describe() for r in current.rules], "user": user,
        "repository": repository, "action": action, "actions": (*ACTIONS, "*"), "verdict": verdict,
    })


async def storage(ctx: Context, *, report: Any = None, error: str = "", status: int = 200) -> Response:
    source: RegistrySource = ctx.request.app.state.source
    usage, last = await source.usage(), await source.last_gc()
    return render(ctx, "storage.html", {"usage": usage, "last": last, "report": report, "error": error,
                                        "grace": source.settings.gc_grace}, status=status)


async def run_gc(ctx: Context) -> Response:
    from secreg.ui.source import Refused

    source: RegistrySource = ctx.request.app.state.source
    dry_run = ctx.form.get("mode") != "run"
    try:
        report = await source.collect_garbage(dry_run)
    except Refused as exc:
        return await storage(ctx, error=str(exc), status=409)
    if not dry_run:
        audit.event("gc.run", by=_by(ctx), blobs=len(report.blobs_removed), bytes_freed=report.bytes_freed)
    return await storage(ctx, report=report)


