"""`secreg serve`: resolve settings, make sure TLS material and the first user exist, run Hypercorn."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

from secreg.config import ConfigError, Settings, load_settings
from secreg.storage.factory import describe

log = logging.getLogger("secreg")
SERVE_ENV = "_SECREG_SERVE"  # read by secreg.asgi in every worker


def encode_serve_args(config_file: str | None, overrides: dict[str, Any], role: str, base_dir: Path) -> str:
    return json.dumps({"config": config_file, "overrides": overrides, "role": role, "base_dir": str(base_dir)})


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the registry (and its token server) over HTTPS")
    p.add_argument("--config", help="YAML config file, laid out like the reference registry's config.yml")
    p.add_argument("--addr", help="listen address HOST:PORT (default 0.0.0.0:5000)")
    p.add_argument("--storage", help="storage directory (storage.filesystem.rootdirectory, default ./data)")
    p.add_argument("--certs", help="certificate directory (default ./certs)")
    p.add_argument("--auth-dir", help="directory of htpasswd, groups and policy.yaml (default ./auth)")
    p.add_argument("--workers", type=_workers_flag, metavar="N|auto",
                   help="worker processes, or auto: one per CPU this process may run on (default auto)")
    p.add_argument("--role", choices=["all", "registry", "auth"], default="all",
                   help="all: registry + token server (default); registry or auth: one of them")
    p.add_argument("--delete-enabled", action="store_true", default=None, help="allow DELETE of blobs and manifests")
    p.add_argument("--readonly", action="store_true", default=None, help="maintenance mode: refuse all writes")
    p.add_argument("--no-auth", action="store_true", default=None,
                   help="turn token authentication off (anyone may push and pull; logged at every start)")
    p.add_argument("--http2", action=argparse.BooleanOptionalAction, default=None,
                   help="offer HTTP/2 by ALPN (the default; --no-http2: HTTP/1.1 only, whatever the config file says)")
    p.add_argument("--insecure-http", action="store_true", default=None,
                   help="listen with plain HTTP (only behind a TLS-terminating proxy)")
    p.add_argument("--public-url", help="the URL clients use, e.g. https://registry.example.com:5000")
    cache = p.add_argument_group("pull-through cache (proxy.*; README \"Mirror / pull-through cache\")")
    cache.add_argument("--proxy-upstream", action="append", type=_upstream_flag, metavar="KEY=VALUE,...",
                       help="an upstream to cache, e.g. name=hub,url=https://registry-1.docker.io,prefix=hub,"
                            "ttl=10m,dockerhub=true (keys of proxy.upstreams[]; password only by passwordfile=); "
                            "repeatable; replaces the configured list")
    cache.add_argument("--proxy-remoteurl", metavar="URL", help="proxy.remoteurl: registry:2's single upstream")
    cache.add_argument("--proxy-username", metavar="NAME", help="proxy.username (for --proxy-remoteurl)")
    cache.add_argument("--proxy-passwordfile", metavar="FILE", help="proxy.passwordfile: its password (first line)")
    cache.add_argument("--proxy-ca", metavar="FILE", help="proxy.ca: a CA file (PEM) to trust for it")
    cache.add_argument("--proxy-ttl", metavar="DURATION", help="proxy.ttl: how long its content is kept (maxage)")
    cache.add_argument("--proxy-eviction-interval", metavar="DURATION",
                       help="proxy.eviction.interval: how often maxage/maxsize are applied (default 10m)")
    p.set_defaults(func=run)


def _workers_flag(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count or auto: {text!r}") from None


def _upstream_flag(text: str) -> dict[str, Any]:
    from secreg.config.proxy import parse_upstream_flag

    try:
        return parse_upstream_flag(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _absolute(path: str | None) -> str | None:
    return path and str(Path(path).resolve())


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    tree: dict[str, Any] = {}

    def put(dotted: str, value: Any) -> None:
        if value is None:
            return
        node = tree
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    put("http.addr", args.addr)
    put("storage.filesystem.rootdirectory", args.storage and str(Path(args.storage).resolve()))
    put("http.tls.directory", args.certs and str(Path(args.certs).resolve()))
    put("auth.directory", args.auth_dir and str(Path(args.auth_dir).resolve()))
    put("http.workers", args.workers)
    put("storage.delete.enabled", args.delete_enabled)
    put("storage.maintenance.readonly.enabled", args.readonly)
    put("auth.enabled", False if args.no_auth else None)
    put("http.http2", args.http2)
    put("http.insecure", args.insecure_http)
    put("http.host", args.public_url)
    upstreams = [dict(entry) for entry in args.proxy_upstream or []]
    for entry in upstreams:  # relative to where the command runs, like the other path flags
        for key in ("ca", "passwordfile"):
            if entry.get(key):
                entry[key] = _absolute(entry[key])
    put("proxy.upstreams", upstreams or None)
    put("proxy.remoteurl", args.proxy_remoteurl)
    put("proxy.username", args.proxy_username)
    put("proxy.passwordfile", _absolute(args.proxy_passwordfile))
    put("proxy.ca", _absolute(args.proxy_ca))
    put("proxy.ttl", args.proxy_ttl)
    put("proxy.eviction.interval", args.proxy_eviction_interval)
    return tree


def run(args: argparse.Namespace) -> int:
    from secreg.cli.main import CliError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = overrides_from_args(args)
    config_file = str(Path(args.config).resolve()) if args.config else None
    base_dir = Path.cwd()
    try:
        settings = load_settings(config_file, overrides, base_dir=base_dir)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    prepare_tls(settings)
    prepare_auth(settings, args.role)
    warn_exposed_secrets(settings, args.role, config_file)
    logging.getLogger().setLevel(settings.log_level.upper())

    from hypercorn.config import Config

    from secreg import supervisor

    os.environ[SERVE_ENV] = encode_serve_args(config_file, overrides, args.role, base_dir)
    from secreg import workers
    from secreg.observability import multiproc

    # Before any worker starts: login rate limits and metrics are counted across workers.
    shared = workers.prepare(settings.workers)
    multiproc.prepare(settings.workers, shared)
    config = hypercorn_config(settings, Config())
    config.application_path = "secreg.asgi:app"
    scheme = "http" if settings.insecure else "https"
    print(f"secreg: serving {scheme}://{settings.bind} (role {args.role}, storage {describe(settings)}, "
          f"{settings.workers} worker(s))", file=sys.stderr, flush=True)
    try:
        # This process is worker 0 and spawns the others: no parent that only supervises (secreg.supervisor).
        return supervisor.serve(config, settings.workers)
    except OSError as exc:
        # Hypercorn binds before serving; its traceback would bury the one fact that matters.
        if isinstance(exc, socket.gaierror) or exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise CliError(f"cannot listen on {settings.bind}: {exc.strerror}") from None
        raise
    finally:
        if shared is not None:
            workers.remove(shared)  # the workers are stopped by now (supervisor.serve waits for them)


def hypercorn_config(settings: Settings, config: Any) -> Any:
    config.bind = [settings.bind]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # through our handler, not a second one
    config.loglevel = settings.log_level.upper()
    config.keep_alive_timeout = settings.idle_timeout
    config.ssl_handshake_timeout = settings.header_timeout
    # Hypercorn closes a connection after 1,000 requests by default: an HTTP/2 client multiplexing small
    # requests on one connection (h2load, containerd) then stops or reconnects; Go's registry has no limit.
    config.keep_alive_max_requests = 1_000_000
    config.graceful_timeout = 10
    config.h11_max_incomplete_size = 64 * 1024
    config.worker_class = settings.event_loop  # asyncio or uvloop (secreg.supervisor picks Hypercorn's worker)
    if not settings.insecure:
        config.certfile = str(settings.tls.certificate)
        config.keyfile = str(settings.tls.key)
        config.alpn_protocols = ["h2", "http/1.1"] if settings.http2 else ["http/1.1"]
        config.create_ssl_context = _preferring_aes128(config.create_ssl_context, settings.event_loop == "asyncio")
    return config


def _preferring_aes128(create: Any, asyncio_loop: bool = True) -> Any:
    """Hypercorn's `create_ssl_context`, with TLS 1.3's AES-128-GCM chosen first, and reading ahead where the
    socket transport reads (`secreg.tls.suites`; uvloop's TLS left records read ahead unread: a push stalled).
    No session tickets: OpenSSL sent two after every TLS 1.3 handshake (two records to build, encrypt and send
    before the first request is read), and no client of a registry resumes with them here: dockerd and other Go
    clients keep no session cache (dockerd opens a new connection for each request), and each worker process
    has its own ticket key, which the other workers refuse. Sequential new connections with one `GET /v2/` each
    (what dockerd does), interleaved A/B: 0.92x the time per connection, and the server's CPU per connection
    1.77 -> 1.63 ms. It also keeps the long-lived ticket key, which would undo forward secrecy, out of use."""
    from secreg import tlstransport
    from secreg.tls.suites import prefer_aes128_gcm, read_ahead

    def create_ssl_context() -> Any:
        context = create()
        if context is not None:
            context.num_tickets = 0  # TLS 1.3
            context.options |= ssl.OP_NO_TICKET  # TLS 1.2 (resumption by session id, within a worker, stays)
            prefer_aes128_gcm(context)
            if asyncio_loop and tlstransport.in_place():  # the worker loaded the app, which installs it, first
                read_ahead(context)
        return context

    return create_ssl_context


def prepare_tls(settings: Settings) -> None:
    from secreg.cli.main import CliError

    if settings.insecure:
        banner = "!" * 78
        log.warning("%s\nPLAIN HTTP listener on %s: no TLS. Only run this behind a TLS-terminating proxy;\n"
                    "docker clients refuse plain HTTP unless listed in insecure-registries.\n%s",
                    banner, settings.bind, banner)
        return
    cert, key = settings.tls.certificate, settings.tls.key
    if cert.exists() and key.exists():
        return
    default_paths = cert.parent == settings.tls.directory and key.parent == settings.tls.directory
    if not (settings.tls.autogenerate and default_paths):
        missing = ", ".join(str(p) for p in (cert, key) if not p.exists())
        raise CliError(f"TLS certificate or key missing: {missing}. Create them with "
                       f"`secreg certs generate --out DIR --host NAME --ip IP` or point http.tls at yours.")
    from secreg import tls

    try:
        files = tls.ensure_dev_certificates(settings.tls.directory)
    except (tls.CertificateExistsError, ValueError) as exc:
        raise CliError(f"cannot create development certificates: {exc}") from exc
    if files is None:
        return
    hosts, ips = tls.dev_sans()
    host_ports = [f"{h}:{settings.port}" for h in [*hosts, *ips] if h != "::1"]
    print("\n" + "=" * 78, file=sys.stderr)
    print(f"secreg: generated a development CA and server certificate in {settings.tls.directory}", file=sys.stderr)
    print("To let a docker client trust this registry (no insecure-registries needed):\n", file=sys.stderr)
    print(tls.docker_trust_instructions(files.ca_cert, host_ports), file=sys.stderr)
    print("=" * 78 + "\n", file=sys.stderr, flush=True)


_CONFIG_SECRETS = ("storage.s3.secretkey", "metrics.token", "redis.password", "proxy.password")


def _config_secrets(config_file: str) -> list[str]:
    """The secret-holding keys `config_file` sets (it parsed once already: load_settings checked it)."""
    import yaml

    try:
        tree = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return []

    def value(path: str) -> Any:
        node: Any = tree
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    found = [key for key in _CONFIG_SECRETS if value(key)]
    upstreams = value("proxy.upstreams")
    if isinstance(upstreams, list) and any(isinstance(u, dict) and u.get("password") for u in upstreams):
        found.append("proxy.upstreams[].password")
    return found


def warn_exposed_secrets(settings: Settings, role: str, config_file: str | None = None) -> None:
    """One warning per secret file other local users may read or write (a key copied in with mode 0644, say):
    secreg writes its own 0600, but serves whatever it finds. Group access is left alone (compose shares by gid).
    A configuration file counts when it sets a password, key or token."""
    from secreg.auth.groups import GROUPS_FILE
    from secreg.ui.session import SECRET_FILE

    if config_file and Path(config_file).stat().st_mode & 0o007 and (keys := _config_secrets(config_file)):
        log.warning("%s sets %s but is open to other local users (mode %03o): chmod o-rwx %s, or set them in the "
                    "environment (SECREG_<SECTION>_<KEY>) or a passwordfile", config_file, ", ".join(keys),
                    Path(config_file).stat().st_mode & 0o777, config_file)

    files = [] if settings.insecure else [settings.tls.key, settings.tls.directory / "ca.key"]
    if settings.auth.enabled:
        auth = settings.auth
        files += [auth.htpasswd, auth.directory / GROUPS_FILE, auth.directory / SECRET_FILE]
        if role in ("all", "auth"):
            files.append(auth.token.key)
    for path in dict.fromkeys(files):
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & 0o007:
            log.warning("%s holds a secret but is open to other local users (mode %03o): chmod o-rwx %s", path,
                        mode & 0o777, path)


def prepare_auth(settings: Settings, role: str) -> None:
    """Create the first user and the default policy (token server roles), then check that every auth file
    the chosen role reads is present and valid, so a mistake is one line here, not a worker traceback."""
    from secreg.cli.main import CliError

    if not settings.auth.enabled:
        log.warning("AUTHENTICATION IS OFF (auth.enabled: false): anyone who can reach %s may push, pull "
                    "and delete.", settings.bind)
        return
    from secreg.auth.bootstrap import bootstrap_auth
    from secreg.auth.policy import Policy, PolicyError

    password = bootstrap_auth(settings) if role in ("all", "auth") else None
    token = settings.auth.token
    needed = [token.certificate] + ([token.key] if role in ("all", "auth") else [])
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise CliError(f"token signing material missing: {', '.join(missing)}; create it with "
                       f"`secreg certs generate` (token.key and token.crt) or set auth.token.key/certificate")
    if not settings.auth.policy.exists():  # only with --role registry: the other roles just wrote it
        raise CliError(f"access policy {settings.auth.policy} is missing: start the auth service first (it "
                       "writes the default policy) or copy auth/policy.example.yaml there")
    try:
        # Parsed now, so a bad file is one line here; the worker's store announces the load (once).
        Policy.parse(settings.auth.policy.read_text(encoding="utf-8"), str(settings.auth.policy))
    except (PolicyError, OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{settings.auth.policy}: {exc}" if not isinstance(exc, PolicyError) else str(exc)) from exc
    if password:
        print("\n" + "=" * 78, file=sys.stderr)
        print("secreg: created user 'admin' (group admins). Its password, shown only this once:\n", file=sys.stderr)
        print(f"    {password}\n", file=sys.stderr)
        if role == "auth":
            print("Log in to the registry this token server serves, not to this port "
                  f"({settings.port}, token requests only): docker login <registry-host>:<registry-port> -u admin",
                  file=sys.stderr)
        else:
            print(f"Log in with: docker login <host>:{settings.port} -u admin", file=sys.stderr)
        print("=" * 78 + "\n", file=sys.stderr, flush=True)
