"""The web UI of a caching server in a real browser (Debian's Chromium driven by Playwright): cached
repositories are marked with their upstream, our own are not, and a cached repository's tags can be browsed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.oci import push_image
from tests.server import run_secreg
from tests.ui.test_browser import browser, new_page  # noqa: F401 - the browser fixture

from .test_pull import proxy_config, pull, upstream_entry
from .upstreams import Pusher, Upstream, random_bytes

pytestmark = pytest.mark.e2e


def test_ui_marks_cached_repositories(tmp_path: Path, go_hub: Upstream, go_pusher: Pusher,
                                      browser: Any) -> None:  # noqa: F811
    go_pusher.image("uicache/app", "v7", [random_bytes(3000, seed=86)])
    with run_secreg(tmp_path / "proxy", proxy_config(upstream_entry("go", go_hub, "go"))) as proxy, \
            proxy.client() as client:
        pull(client, "go/uicache/app", "v7")
        push_image(client, "uiown/app", "v1", seed="uiown")
        page = new_page(browser, proxy)
        try:
            page.goto("/ui/?q=ui")
            cached = page.locator("tr", has=page.get_by_role("link", name="go/uicache/app", exact=True))
            assert cached.locator(".badge").inner_text() == "cache: go"
            assert "pull-through cache of the upstream go" in (cached.locator(".badge").get_attribute("title") or "")
            own = page.locator("tr", has=page.get_by_role("link", name="uiown/app", exact=True))
            assert own.count() == 1 and own.locator(".badge").count() == 0
            page.get_by_role("link", name="go/uicache/app", exact=True).click()
            page.wait_for_url("**/ui/repo/go/uicache/app**")
            assert page.locator(".heading .badge").inner_text() == "cache: go"
            assert page.get_by_text("v7", exact=True).first.is_visible()
            page.goto("/ui/repo/uiown/app")
            assert page.locator(".heading .badge").count() == 0
        finally:
            page.context.close()
