"""The UI in a real browser (Debian's Chromium driven by Playwright) against a real `secreg serve`, with
images pushed by the real docker CLI. Screenshots of each main page go to $UI_SCREENSHOT_DIR (default: a
directory under pytest's tmp path, printed at the end)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import docker_binaries, docker_engine, unavailable  # noqa: F401 - fixtures
from tests.e2e.harness import DockerEngine, push_digest
from tests.server import RunningServer, run_secreg
from tests.ui.conftest import DEV_PASSWORD, add_user, write_policy

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS_LABEL = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
LAYERS = 3


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    configured = os.environ.get("UI_SCREENSHOT_DIR")
    directory = Path(configured) if configured else tmp_path_factory.mktemp("ui-screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    yield directory
    print(f"\n[ui] screenshots in {directory}: {', '.join(sorted(p.name for p in directory.glob('*.png')))}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} not found (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install playwright; never `playwright install`)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("ui-browser")
    write_policy(workdir)
    with run_secreg(workdir, {"storage": {"delete": {"enabled": True}}}) as running:
        add_user(workdir, "dev", DEV_PASSWORD)
        yield running


@pytest.fixture(scope="module")
def pushed(server: RunningServer, docker_engine: DockerEngine) -> dict[str, str]:  # noqa: F811
    """public/web:1.0 and :old (same image: three layers, a label carrying script), pushed by docker."""
    registry = server.host_port
    docker_engine.login(registry, "admin", server.admin_password or "")
    context = docker_engine.build_dir / "ui-web"
    context.mkdir(parents=True, exist_ok=True)
    try:
        lines = ["FROM scratch"]
        for i in range(LAYERS):
            (context / f"f{i}.bin").write_bytes(os.urandom(50_000 * (i + 1)))
            lines.append(f"COPY f{i}.bin /f{i}.bin")
        lines.append(f"LABEL org.example.xss={json.dumps(XSS_LABEL)} org.opencontainers.image.title=web")
        (context / "Dockerfile").write_text("\n".join(lines) + "\n")
        ref = f"{registry}/public/web"
        docker_engine.run("build", "--quiet", "--tag", f"{ref}:1.0", str(context))
    finally:
        shutil.rmtree(context, ignore_errors=True)
    docker_engine.run("tag", f"{ref}:1.0", f"{ref}:old")
    digest = push_digest(docker_engine.run("push", f"{ref}:1.0").stdout)
    docker_engine.run("push", f"{ref}:old")
    for other in ("public/api:2.3", "team/db:15", "tools/ci:latest"):  # a fuller repository list
        docker_engine.run("tag", f"{ref}:1.0", f"{registry}/{other}")
        docker_engine.run("push", f"{registry}/{other}")
    return {"ref": ref, "digest": digest}


def new_page(browser: Any, server: RunningServer) -> Any:
    context = browser.new_context(ignore_https_errors=True, base_url=server.url,
                                  viewport={"width": 1280, "height": 860})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    page.set_default_timeout(60_000)  # waits end when their condition holds: generous for a loaded machine
    return page


def log_in(page: Any, user: str, password: str) -> None:
    page.goto("/ui/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("form.stack button[type=submit]")
    assert page.text_content("#current-user") == user


@pytest.fixture()
def admin_page(browser: Any, server: RunningServer) -> Iterator[Any]:
    page = new_page(browser, server)
    log_in(page, "admin", server.admin_password or "")
    yield page
    page.context.close()


def test_log_in_browse_to_the_pushed_image_see_layers_and_pull_command(
        browser: Any, server: RunningServer, pushed: dict[str, str], screenshots: Path) -> None:
    page = new_page(browser, server)
    page.goto("/ui/login")
    page.screenshot(path=str(screenshots / "login.png"))
    log_in(page, "admin", server.admin_password or "")
    assert page.url.endswith("/ui/")
    page.screenshot(path=str(screenshots / "repositories.png"), full_page=True)
    with page.expect_navigation():
        page.click("#repositories a:text-is('public/web')")
    assert page.locator("#tags tr[data-tag]").count() == 2
    page.screenshot(path=str(screenshots / "tags.png"), full_page=True)
    with page.expect_navigation():
        page.click("#tags a:text-is('1.0')")
    assert page.text_content("#digest") == pushed["digest"]
    assert page.locator("#layers tbody tr").count() == LAYERS + 1  # the layers and the config
    commands = page.locator(".pull-command").all_text_contents()
    assert commands == [f"docker pull {pushed['ref']}:1.0", f"docker pull {pushed['ref']}@{pushed['digest']}"]
    page.click(f"button[data-copy='docker pull {pushed['ref']}:1.0']")
    page.wait_for_function("() => document.querySelector('button.copy.done') !== null")
    assert page.evaluate("navigator.clipboard.readText()") == f"docker pull {pushed['ref']}:1.0"
    page.screenshot(path=str(screenshots / "manifest.png"), full_page=True)
    page.context.close()


def test_an_xss_payload_in_a_label_renders_inert(admin_page: Any, pushed: dict[str, str]) -> None:
    dialogs: list[str] = []
    admin_page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    admin_page.goto("/ui/repo/public/web/-/manifest/1.0")
    cell = admin_page.locator("#labels tr:has(th:text-is('org.example.xss')) td")
    assert cell.text_content() == XSS_LABEL  # shown as text
    assert cell.locator("img, script").count() == 0
    assert admin_page.evaluate("window.__xss") is None
    assert dialogs == []


def test_delete_a_tag_and_docker_pull_no_longer_finds_it(admin_page: Any, pushed: dict[str, str],
                                                         docker_engine: DockerEngine) -> None:  # noqa: F811
    admin_page.goto("/ui/repo/public/web")
    admin_page.once("dialog", lambda dialog: dialog.accept())
    with admin_page.expect_navigation():
        admin_page.click("#tags tr[data-tag='old'] button:text-is('Delete tag')")
    assert admin_page.text_content("#notice") == "Deleted tag old."
    assert admin_page.locator("#tags tr[data-tag]").count() == 1
    failed = docker_engine.run("pull", f"{pushed['ref']}:old", check=False)
    assert failed.returncode != 0
    assert "not found" in failed.stderr or "manifest unknown" in failed.stderr, failed.stderr
    # dismissing the confirmation deletes nothing
    admin_page.once("dialog", lambda dialog: dialog.dismiss())
    admin_page.click("#tags tr[data-tag='1.0'] button:text-is('Delete tag')")
    admin_page.wait_for_timeout(300)
    assert admin_page.locator("#tags tr[data-tag='1.0']").count() == 1


def test_a_user_added_in_the_admin_pages_can_docker_login(admin_page: Any, server: RunningServer,
                                                          docker_engine: DockerEngine,  # noqa: F811
                                                          screenshots: Path) -> None:
    admin_page.goto("/ui/admin/users")
    admin_page.fill("#add-user input[name=name]", "erin")
    admin_page.fill("#add-user input[name=groups]", "team")
    with admin_page.expect_navigation():
        admin_page.click("#add-user button[type=submit]")
    password = admin_page.text_content("#generated-password")
    assert password and len(password) >= 20
    admin_page.screenshot(path=str(screenshots / "users.png"), full_page=True)
    out = docker_engine.login(server.host_port, "erin", password)
    assert "Login Succeeded" in out.stdout
    admin_page.reload()
    assert admin_page.locator("#generated-password").count() == 0, "shown only once"
    assert admin_page.locator("#users tr[data-user='erin']").count() == 1
    # "Revoke logins" (confirmed in the dialog): docker's stored identity token (a refresh token) is refused.
    image = f"{server.host_port}/team/none:1"
    before = docker_engine.run("pull", image, check=False)
    assert "unauthorized" not in (before.stdout + before.stderr).lower(), before.stderr  # (not found: no image)
    admin_page.once("dialog", lambda dialog: dialog.accept())
    with admin_page.expect_navigation():
        admin_page.click("#users tr[data-user='erin'] form[action$='/revoke'] button")
    assert "revoked the docker logins of erin" in admin_page.content()
    after = docker_engine.run("pull", image, check=False)
    assert after.returncode != 0 and "revoked" in (after.stdout + after.stderr), after.stderr


def test_the_policy_explainer(admin_page: Any, screenshots: Path) -> None:
    admin_page.goto("/ui/admin/policy")
    admin_page.fill("#explain input[name=user]", "dev")
    admin_page.fill("#explain input[name=repository]", "dev/tools")
    admin_page.select_option("#explain select[name=action]", "push")
    with admin_page.expect_navigation():
        admin_page.click("#explain button[type=submit]")
    verdict = admin_page.text_content("#verdict") or ""
    assert "dev may push dev/tools?" in verdict and "allow: rule 2" in verdict
    admin_page.screenshot(path=str(screenshots / "policy.png"), full_page=True)
    admin_page.fill("#explain input[name=user]", "anonymous")
    admin_page.fill("#explain input[name=repository]", "secret/x")
    with admin_page.expect_navigation():
        admin_page.click("#explain button[type=submit]")
    assert "deny: no rule grants it" in (admin_page.text_content("#verdict") or "")


def test_storage_page_and_gc_dry_run(admin_page: Any, screenshots: Path, pushed: dict[str, str]) -> None:
    admin_page.goto("/ui/admin/storage")
    with admin_page.expect_navigation():
        admin_page.click("#gc-dry-run")
    assert "Dry run: would free" in (admin_page.text_content("#gc-report") or "")
    admin_page.screenshot(path=str(screenshots / "storage.png"), full_page=True)


def test_a_non_admin_sees_no_admin_pages_and_gets_403(browser: Any, server: RunningServer,
                                                      pushed: dict[str, str]) -> None:
    page = new_page(browser, server)
    log_in(page, "dev", DEV_PASSWORD)
    assert page.locator("header nav a").all_text_contents() == ["Repositories"]
    for path in ("/ui/admin/users", "/ui/admin/policy", "/ui/admin/storage"):
        response = page.goto(path)
        assert response is not None and response.status == 403, path
    assert page.locator("text=Delete tag").count() == 0
    page.goto("/ui/repo/public/web")
    assert page.locator("button:text-is('Delete tag')").count() == 0
    page.context.close()


def test_a_forged_csrf_token_is_refused(admin_page: Any, pushed: dict[str, str]) -> None:
    admin_page.goto("/ui/repo/public/web")
    admin_page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(i => { i.value = 'forged'; })")
    admin_page.once("dialog", lambda dialog: dialog.accept())
    with admin_page.expect_navigation() as navigation:
        admin_page.click("#tags tr[data-tag='1.0'] button:text-is('Delete tag')")
    assert navigation.value.status == 403
    assert "security token" in (admin_page.text_content("#error-message") or "")
    admin_page.goto("/ui/repo/public/web")
    assert admin_page.locator("#tags tr[data-tag='1.0']").count() == 1
