"""Fixtures for the auth tests: generated certificates, auth files, and a real Hypercorn TLS server."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.types import ASGIApp

from secreg.auth.groups import GroupStore
from secreg.auth.policy import DEFAULT_POLICY, PolicyStore
from secreg.auth.ratelimit import RateLimiter
from secreg.auth.revocation import LOCAL_FILE, LocalRevocations
from secreg.auth.server import TokenService, token_routes
from secreg.auth.tokens import TokenIssuer, TokenVerifier
from secreg.auth.users import UserStore
from secreg.tls import CertificateFiles, generate_certificates, load_certificate_chain, load_private_key

SERVICE = "secreg"
ISSUER = "secreg"
PASSWORDS = {"admin": "admin-password", "alice": "alice-password", "bob": "bob-password"}
TEST_POLICY = (
    DEFAULT_POLICY
    + """\
  - account: anonymous
    repository: "public/*"
    actions: [pull]
  - account: "*"
    repository: "shared/*"
    actions: [pull]
"""
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return generate_certificates(tmp_path_factory.mktemp("certs"), ["localhost"], ["127.0.0.1"])


@pytest.fixture(scope="session")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    """A second, unrelated CA and token key: what an attacker's token server would sign with."""
    return generate_certificates(tmp_path_factory.mktemp("other-certs"), ["localhost"], ["127.0.0.1"])


def make_issuer(certs: CertificateFiles, **kwargs: object) -> TokenIssuer:
    return TokenIssuer(
        load_private_key(certs.token_key),
        load_certificate_chain(certs.token_cert),
        issuer=ISSUER,
        service=SERVICE,
        **kwargs,  # type: ignore[arg-type]
    )


def make_verifier(certs: CertificateFiles) -> TokenVerifier:
    key = load_certificate_chain(certs.token_cert)[0].public_key()
    return TokenVerifier(key, issuer=ISSUER, service=SERVICE)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def issuer(certs: CertificateFiles) -> TokenIssuer:
    return make_issuer(certs)


@pytest.fixture(scope="session")
def verifier(certs: CertificateFiles) -> TokenVerifier:
    return make_verifier(certs)


def make_auth_dir(directory: Path) -> Path:
    """htpasswd (bcrypt cost 4: fast), groups and a policy: admin in admins; alice and bob plain users."""
    directory.mkdir(parents=True, exist_ok=True)
    users = UserStore(directory / "htpasswd", rounds=4, check_interval=0)
    for name, password in PASSWORDS.items():
        users.add(name, password)
    GroupStore(directory / "groups", check_interval=0).add("admin", "admins")
    (directory / "policy.yaml").write_text(TEST_POLICY)
    return directory


def make_service(auth_dir: Path, certs: CertificateFiles, limiter: RateLimiter | None = None, *,
                 clock: Callable[[], float] | None = None, reuse: float = 0) -> TokenService:
    return TokenService(
        issuer=make_issuer(certs) if clock is None else make_issuer(certs, clock=clock),
        users=UserStore(auth_dir / "htpasswd", rounds=4, check_interval=0),
        groups=GroupStore(auth_dir / "groups", check_interval=0),
        policy=PolicyStore(auth_dir / "policy.yaml", check_interval=0),
        limiter=limiter or RateLimiter(attempts=3, window=60, lockout=30),
        revocations=LocalRevocations(auth_dir / LOCAL_FILE, 30 * 24 * 3600),
        reuse=reuse,
    )


def ca_context(certs: CertificateFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs.ca_cert))


@contextmanager
def serve_tls(app: ASGIApp, certs: CertificateFiles) -> Iterator[str]:
    """Run `app` under Hypercorn with TLS on 127.0.0.1 in a background thread; yields the base URL."""
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.certfile = str(certs.server_cert)
    config.keyfile = str(certs.server_key)
    config.accesslog = None
    config.graceful_timeout = 1
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    async def shutdown_trigger() -> None:
        await stop.wait()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            server = serve(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
            loop.run_until_complete(server)
        except BaseException as exc:  # noqa: BLE001  # surfaced by the waiting test below
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name=f"hypercorn-{port}", daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            if failure:
                raise RuntimeError(f"hypercorn failed to start: {failure[0]!r}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("hypercorn did not start in 15 s") from None
                time.sleep(0.05)
        yield url
    finally:
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=15)
        assert not thread.is_alive(), "hypercorn thread did not stop"


def client_for(url: str, certs: CertificateFiles) -> httpx.Client:
    return httpx.Client(base_url=url, verify=ca_context(certs), timeout=30)


# --- fixtures (test modules use these rather than importing this file) ---------------------------------


@pytest.fixture(scope="session")
def passwords() -> dict[str, str]:
    return dict(PASSWORDS)


@pytest.fixture()
def auth_dir(tmp_path: Path) -> Path:
    return make_auth_dir(tmp_path / "auth")


@pytest.fixture(scope="session")
def new_issuer() -> Callable[..., TokenIssuer]:
    """`new_issuer(certs, **TokenIssuer keyword arguments)`."""
    return make_issuer


@pytest.fixture(scope="session")
def new_verifier() -> Callable[[CertificateFiles], TokenVerifier]:
    return make_verifier


@pytest.fixture(scope="session")
def new_service() -> Callable[..., TokenService]:
    """`new_service(auth_dir, certs, limiter=None, *, clock=None, reuse=0)`."""
    return make_service


@pytest.fixture()
def tls_server(certs: CertificateFiles) -> Iterator[Callable[[ASGIApp], str]]:
    """`tls_server(app) -> base URL`: serves `app` over TLS until the test ends."""
    with ExitStack() as stack:
        yield lambda app: stack.enter_context(serve_tls(app, certs))


@pytest.fixture(scope="session")
def https_client(certs: CertificateFiles) -> Callable[[str], httpx.Client]:
    """`https_client(base_url)`: an httpx client trusting the test CA."""
    return lambda url: client_for(url, certs)


ServeTokens = Callable[..., tuple[str, TokenService, httpx.Client]]


@pytest.fixture()
def serve_tokens(auth_dir: Path, certs: CertificateFiles,
                 tls_server: Callable[[ASGIApp], str]) -> Iterator[ServeTokens]:
    """`serve_tokens(**make_service keyword arguments) -> (base URL, service, client)`: a token server on the
    test's auth directory over TLS, and an httpx client of it, both until the test ends."""
    with ExitStack() as stack:

        def serve(**options: Any) -> tuple[str, TokenService, httpx.Client]:
            service = make_service(auth_dir, certs, **options)
            url = tls_server(Starlette(routes=token_routes(service)))
            return url, service, stack.enter_context(client_for(url, certs))

        yield serve
