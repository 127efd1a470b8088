"""Every URL the API hands out, built in one place."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from secreg.digest import Digest


def blob(name: str, digest: Digest) -> str:
    return f"/v2/{name}/blobs/{digest}"


def upload(name: str, upload_id: str) -> str:
    return f"/v2/{name}/blobs/uploads/{upload_id}"


def manifest(name: str, digest: Digest) -> str:
    return f"/v2/{name}/manifests/{digest}"


def tags_page(name: str, n: int, last: str) -> str:
    return f"/v2/{name}/tags/list?{urlencode({'n': n, 'last': last})}"


def catalog_page(n: int, last: str) -> str:
    return f"/v2/_catalog?{urlencode({'n': n, 'last': last})}"


def next_link(url: str) -> str:
    return f'<{quote(url, safe="/?=&:;,+%")}>; rel="next"'
