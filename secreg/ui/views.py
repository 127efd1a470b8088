"""The browsing pages (repositories, tags, a manifest), deletes, and logging in and out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import anyio.to_thread
from starlette.responses import RedirectResponse, Response

from secreg.errors import RegistryError
from secreg.ui import logic
from secreg.ui.source import NotFound, Refused, RegistrySource
from secreg.ui.web import Context, render

REPOSITORIES_PER_PAGE = 50
TAGS_PER_PAGE = 50


def source_of(ctx: Context) -> RegistrySource:
    source: RegistrySource = ctx.request.app.state.source
    return source


def repo_url(name: str) -> str:
    return f"/ui/repo/{quote(name)}"


def manifest_url(name: str, reference: str) -> str:
    return f"/ui/repo/{quote(name)}/-/manifest/{quote(reference, safe=':')}"


def _redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


@dataclass(frozen=True)
class RepositoryRow:
    name: str
    tags: int
    size: int
    pushed: float | None


async def repositories(ctx: Context) -> Response:
    query = ctx.request.query_params.get("q", "")[:200]
    number = logic.page_number(ctx.request.query_params.get("page"))
    source = source_of(ctx)

    names = logic.search(ctx.viewer.visible(await source.repositories()), query)
    page = logic.paginate(names, number, REPOSITORIES_PER_PAGE)
    summaries = await source.repository_summaries(list(page.items))
    rows = [RepositoryRow(name, s.tags, s.size, s.pushed) for name, s in zip(page.items, summaries, strict=True)]
    values = {"page": page, "rows": rows, "query": query, "cached": await source.cached(list(page.items))}
    return render(ctx, "repositories.html", {**values, "repo_url": repo_url,
                                             "page_url": lambda n: "/ui/?" + urlencode({"q": query, "page": n})})


async def tags(ctx: Context) -> Response:
    name: str = ctx.request.path_params["name"]
    params = ctx.request.query_params
    sort = "name" if params.get("sort") == "name" else "pushed"
    number = logic.page_number(params.get("page"))
    source = source_of(ctx)

    if not await source.exists(name):
        raise NotFound(name)
    listed = await source.tags(name)
    if sort == "pushed":
        listed.sort(key=lambda t: (-t.pushed, t.name))
    page = logic.paginate(listed, number, TAGS_PER_PAGE)
    values = {"page": page, "rows": await source.tag_rows(name, list(page.items)), "total": len(listed)}
    deletable = ctx.viewer.may_delete(name) and source.delete_enabled
    cache_of = (await source.cached([name])).get(name)  # the upstream of a pull-through cache repository
    return render(ctx, "tags.html", {
        **values, "name": name, "sort": sort, "deletable": deletable, "deleted": params.get("deleted", "")[:300],
        "cache_of": cache_of,
        "repo_url": repo_url, "manifest_url": manifest_url,
        "page_url": lambda n: f"{repo_url(name)}?" + urlencode({"sort": sort, "page": n}),
        "sort_url": lambda s: f"{repo_url(name)}?" + urlencode({"sort": s}),
    })


async def manifest(ctx: Context) -> Response:
    name: str = ctx.request.path_params["name"]
    reference: str = ctx.request.path_params["reference"]
    source = source_of(ctx)

    found = await source.manifest(name, reference)
    tag = None if reference.startswith(("sha256:", "sha512:")) else reference
    values: dict[str, Any] = {
        "manifest": found, "tag": tag, "is_index": logic.is_index(found.media_type, found.document),
        "tags_here": await source.tags_pointing_at(name, found.digest),
        "commands": logic.pull_commands(ctx.host, name, tag, found.digest),
    }
    if values["is_index"]:
        values["platforms"] = logic.platform_rows(found.document, await source.child_sizes(name, found.document))
        values["annotations"] = logic.image_view(found.digest, found.media_type, found.document, None).annotations
    else:
        values["image"] = logic.image_view(found.digest, found.media_type, found.document,
                                           await source.config(name, found.document))
    referrers = logic.referrer_rows(await source.referrers(name, found.digest))
    # cosign's tag scheme (sha256-<hex>.sig) for registries without the referrers API
    for other in await source.tags(name):
        subject = logic.tag_subject(other.name)
        if subject is not None and subject[0] == found.digest:
            try:
                artifact = await source.manifest(name, other.name)
            except NotFound:
                continue
            referrers.append(logic.ReferrerRow(artifact.digest, artifact.media_type, f"tag {other.name}",
                                               artifact.size, logic.format_time(other.pushed), subject[1]))
    values["referrer_groups"] = logic.group_referrers(referrers)

    deletable = ctx.viewer.may_delete(name) and source.delete_enabled
    return render(ctx, "manifest.html", {**values, "name": name, "reference": reference, "deletable": deletable,
                                         "repo_url": repo_url, "manifest_url": manifest_url})


async def delete_tag(ctx: Context) -> Response:
    name: str = ctx.request.path_params["name"]
    tag: str = ctx.request.path_params["tag"]
    source = source_of(ctx)
    digest = await source.delete_tag(name, tag)
    _audit_delete(ctx, name, tag, digest)
    return _redirect(f"{repo_url(name)}?" + urlencode({"deleted": f"tag {tag}"}))


async def confirm_delete_manifest(ctx: Context) -> Response:
    name: str = ctx.request.path_params["name"]
    digest: str = ctx.request.path_params["reference"]
    source = source_of(ctx)
    found = await source.manifest(name, digest)
    if not source.delete_enabled:
        raise Refused("deletes are disabled on this registry (storage.delete.enabled: false)")
    going = await source.tags_pointing_at(name, found.digest)
    return render(ctx, "confirm_delete.html", {"name": name, "manifest": found, "tags_going": going,
                                               "repo_url": repo_url, "manifest_url": manifest_url})


async def delete_manifest(ctx: Context) -> Response:
    name: str = ctx.request.path_params["name"]
    digest: str = ctx.request.path_params["reference"]
    source = source_of(ctx)
    gone = await source.delete_manifest(name, digest)
    _audit_delete(ctx, name, digest, digest, tags=gone)
    what = f"manifest {digest}" + (f" and tag(s) {', '.join(gone)}" if gone else "")
    return _redirect(f"{repo_url(name)}?" + urlencode({"deleted": what}))


def _audit_delete(ctx: Context, name: str, reference: str, digest: str, tags: list[str] | None = None) -> None:
    from secreg.observability import audit

    client = ctx.request.client.host if ctx.request.client else "-"
    audit.event("manifest.delete", user=ctx.viewer.subject or "-", client=client, repository=name,
                reference=reference[:200], digest=digest, tags=tags, via="ui")


# --- logging in and out ------------------------------------------------------------------------------


def _next_url(value: str | None) -> str:
    """Where to go after logging in: a page of this UI only (no other site, no `//host`)."""
    if (value and value.startswith("/ui/") and "\\" not in value and "//" not in value
            and ".." not in value.split("/") and value.isprintable()):
        return value
    return "/ui/"


async def login_form(ctx: Context) -> Response:
    return render(ctx, "login.html", {"next": _next_url(ctx.request.query_params.get("next")), "error": ""})


async def login(ctx: Context) -> Response:
    form = ctx.form
    user = form.get("username", "").strip()[:64]
    password = form.get("password", "")
    target = _next_url(form.get("next"))
    service = ctx.request.app.state.token_service
    if service is None:
        return render(ctx, "login.html", {"next": target, "error": "authentication is off on this registry"},
                      status=400)
    client = ctx.request.client.host if ctx.request.client else "unknown"
    try:
        subject = await service.password_login(user, password, client, "ui")
    except RegistryError as exc:
        headers = {"Retry-After": exc.headers["Retry-After"]} if "Retry-After" in exc.headers else {}
        message = exc.message + (f" (retry in {headers['Retry-After']} s)" if headers else "")
        return render(ctx, "login.html", {"next": target, "error": message, "username": user},
                      status=exc.status, headers=headers)
    ctx.login(subject, service.users.fingerprint(subject) or "")
    return _redirect(target)


async def logout(ctx: Context) -> Response:
    await anyio.to_thread.run_sync(ctx.logout)  # writes the logout record
    return _redirect("/ui/")
