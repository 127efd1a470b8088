"""Settings: embedded defaults < YAML file (`--config`) < `SECREG_*` environment < command-line flags.

The YAML keys follow the reference registry's `config.yml` layout. Every source is merged into one
nested dict, then validated once into the frozen `Settings` value that the rest of secreg reads.

Environment variables name a key path with `_` between levels: `SECREG_STORAGE_DELETE_ENABLED=true`
sets `storage.delete.enabled`. Key names therefore never contain `_` themselves (as in the reference
registry: `rootdirectory`, `maxsize`).
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from secreg.config.defaults import COMPOSE_VARIABLES, DEFAULTS, ENV_PREFIX  # the bottom layer: every known key
from secreg.config.proxy import ProxySettings, parse_proxy


class ConfigError(ValueError):
    """A setting is missing, of the wrong type or out of range."""


# `storage.s3` as a value: here, with the other settings, so config imports nothing of storage/.
@dataclass(frozen=True)
class S3Options:
    """The reference registry's key names (distribution's `s3-aws` driver), plus `redirect`."""

    bucket: str
    region: str = "us-east-1"
    regionendpoint: str = ""  # a non-AWS S3 service (path-style addressing); empty: AWS for `region`
    rootdirectory: str = ""  # key prefix
    accesskey: str = ""  # empty: the standard AWS chain (AWS_* environment, ~/.aws, instance role)
    secretkey: str = field(default="", repr=False)
    secure: bool = True  # https to the object store
    v4auth: bool = True  # SigV4 signatures (false: legacy SigV2)
    chunksize: int = 10 * 1024 * 1024  # multipart part size for uploads (>= 5 MiB)
    multipartcopythresholdsize: int = 32 * 1024 * 1024  # server-side copies above this use UploadPartCopy
    multipartcopychunksize: int = 32 * 1024 * 1024
    redirect: bool = False  # blob GET answers 307 to a presigned URL
    redirectexpiry: int = 60  # seconds a presigned URL stays valid


@dataclass(frozen=True)
class TLSSettings:
    certificate: Path
    key: Path
    directory: Path
    autogenerate: bool


@dataclass(frozen=True)
class TokenSettings:
    realm: str
    service: str
    issuer: str
    key: Path
    certificate: Path
    expiration: int
    refresh_expiration: int
    max_body: int = 64 * 1024
    reuse: int = 10


@dataclass(frozen=True)
class RateLimitSettings:
    attempts: int
    window: int
    lockout: int


@dataclass(frozen=True)
class AuthSettings:
    enabled: bool
    directory: Path
    htpasswd: Path
    policy: Path
    token: TokenSettings
    ratelimit: RateLimitSettings


@dataclass(frozen=True)
class UISettings:
    enabled: bool
    session_lifetime: int


@dataclass(frozen=True)
class RedisSettings:
    host: str
    port: int
    password: str = field(repr=False)
    db: int


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    public_url: str
    workers: int
    http2: bool
    insecure: bool
    header_timeout: int
    body_timeout: int
    idle_timeout: int
    max_connections: int
    max_connections_per_client: int
    tls: TLSSettings
    storage_root: Path
    storage_direct_io: bool
    storage_s3: S3Options | None
    redis: RedisSettings | None
    delete_enabled: bool
    readonly: bool
    upload_purge_enabled: bool
    upload_purge_age: int
    upload_purge_interval: int
    manifest_max_size: int
    auth: AuthSettings
    log_level: str
    access_log_format: str
    access_log_enabled: bool
    audit_file: Path | None
    metrics_enabled: bool
    metrics_token: str = field(repr=False)
    gc_schedule_enabled: bool
    gc_interval: int
    gc_delay: int
    gc_grace: int
    ui: UISettings = field(default_factory=lambda: UISettings(True, 1800))
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    tag_cache_max_age: int = 1
    event_loop: str = "asyncio"
    tls_transport: str = "socket"
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    proxy_protocol: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @property
    def bind(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _known_paths(node: Mapping[str, Any], prefix: str = "") -> list[str]:
    paths: list[str] = []
    for key, value in node.items():
        paths.append(prefix + key)
        if isinstance(value, Mapping):
            paths.extend(_known_paths(value, f"{prefix}{key}."))
    return paths


def check_keys(tree: Mapping[str, Any], source: str, known: Mapping[str, Any] = DEFAULTS, prefix: str = "") -> None:
    """Refuse a key secreg does not know (a typo, or a section of another registry's config) with its path and
    the nearest known key, instead of silently running on the default."""
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str) or key not in known:
            siblings = [f"{prefix}{k}" for k in known]
            close = difflib.get_close_matches(dotted, _known_paths(DEFAULTS), n=1, cutoff=0.75)
            close = close or difflib.get_close_matches(dotted, siblings, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else f"known here: {', '.join(siblings)}"
            raise ConfigError(f"{source}: unknown key {dotted} ({hint})")
        expected = known[key]
        if isinstance(expected, Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {dotted} must be a mapping of {', '.join(expected)}, got {value!r}")
            check_keys(value, source, expected, f"{dotted}.")
        elif isinstance(value, Mapping):
            raise ConfigError(f"{source}: {dotted} is a single value, not a mapping")


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`SECREG_A_B_C=v` -> {"a": {"b": {"c": v}}}, values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX:
            continue
        parts = name[len(ENV_PREFIX):].lower().split("_")
        if not all(parts):
            raise ConfigError(f"environment variable {name}: empty key part")
        if name[len(ENV_PREFIX):] in COMPOSE_VARIABLES:
            continue
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment variable {name} conflicts with another SECREG_ variable")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            node[parts[-1]] = value
    return tree


def load_settings(
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Settings:
    """Merge defaults, the YAML file, the environment and explicit overrides, then validate."""
    tree = copy.deepcopy(DEFAULTS)
    if config_file:
        path = Path(config_file)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        check_keys(loaded, f"config file {path}")
        deep_merge(tree, loaded)
    from_env = env_overrides(os.environ if environ is None else environ)
    check_keys(from_env, "environment (SECREG_* variables)")
    deep_merge(tree, from_env)
    if overrides:
        check_keys(overrides, "settings")
        deep_merge(tree, overrides)
    return validate(tree, base_dir or Path.cwd())


def _get(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"{dotted}: missing")
        node = node[part]
    return node


def _bool(tree: Mapping[str, Any], dotted: str) -> bool:
    value = _get(tree, dotted)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    raise ConfigError(f"{dotted}: expected true or false, got {value!r}")


def _int(tree: Mapping[str, Any], dotted: str, minimum: int = 0) -> int:
    value = _get(tree, dotted)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{dotted}: expected an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{dotted}: expected an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{dotted}: must be at least {minimum}, got {number}")
    return number


def _tls_transport(tree: Mapping[str, Any]) -> str:
    """`http.tlstransport`: socket (secreg.tlstransport) or asyncio (asyncio's own TLS)."""
    choice = _str(tree, "http.tlstransport").strip().lower() or "socket"
    if choice not in ("socket", "asyncio"):
        raise ConfigError(f"http.tlstransport: expected socket or asyncio, got {choice!r}")
    return choice


def _event_loop(tree: Mapping[str, Any], proxy_protocol: tuple[Any, ...] = ()) -> str:
    """`http.eventloop`: asyncio, uvloop, or auto (uvloop when it can be imported, and no PROXY headers are read:
    uvloop accepts connections in its own code, where secreg.proxyprotocol cannot read them first)."""
    choice = _str(tree, "http.eventloop").strip().lower() or "asyncio"
    if choice not in ("asyncio", "uvloop", "auto"):
        raise ConfigError(f"http.eventloop: expected asyncio, uvloop or auto, got {choice!r}")
    if choice == "uvloop" and proxy_protocol:
        raise ConfigError("http.eventloop: uvloop cannot read PROXY headers (http.proxyprotocol); use asyncio")
    if choice == "asyncio" or proxy_protocol:
        return "asyncio"
    if importlib.util.find_spec("uvloop") is None:
        if choice == "uvloop":
            raise ConfigError("http.eventloop: uvloop is not installed (pip install uvloop)")
        return "asyncio"
    return "uvloop"


# `http.workers: auto` starts one worker per CPU up to this many. Past it a worker adds memory (40-55 MiB idle
# each, so 64 would idle at ~3 GiB) and contention on what the workers share (the connection table's and the
# rate limiter's file locks, the tag cache's counters, the pull-through cache's fetch claims) sooner than
# throughput: a registry is bound by its disk and network long before 8 Python processes run out of CPU.
# An explicit count is taken as given.
AUTO_WORKERS_MAX = 8


def _workers(tree: Mapping[str, Any]) -> int:
    """`http.workers`: a count, or `auto` for one per CPU this process may run on (its affinity mask), at most
    AUTO_WORKERS_MAX (a worker costs memory and shared-state contention; past 8 the disk and network bind first)."""
    if str(_get(tree, "http.workers")).strip().lower() == "auto":
        return max(1, min(AUTO_WORKERS_MAX, len(os.sched_getaffinity(0))))
    return _int(tree, "http.workers", 1)


def _str(tree: Mapping[str, Any], dotted: str) -> str:
    value = _get(tree, dotted)
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ConfigError(f"{dotted}: expected a string, got {value!r}")
    return str(value)


def _path(tree: Mapping[str, Any], dotted: str, base_dir: Path, default: Path) -> Path:
    text = _str(tree, dotted)
    path = Path(text).expanduser() if text else default
    return path if path.is_absolute() else (base_dir / path)


_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$")


def parse_addr(addr: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `:PORT` -> (host, port). HOST is an IP address or a host name: Hypercorn reads
    a bind string that starts with `unix:` or `fd://` as a unix socket or an inherited descriptor, and neither is
    a listener secreg offers (the per-client connection limit and the workers' `SO_REUSEPORT` seats take a TCP
    address; `fd://3:5000` even became an unbound socket the kernel gave a random port on every interface)."""
    if addr.startswith(("unix:", "fd://")):
        raise ConfigError(f"http.addr: {addr!r}: unix sockets and inherited descriptors (fd://) are not supported, "
                          "with one worker or several; listen on HOST:PORT (a local proxy may forward a unix "
                          "socket there)")
    host, sep, port_text = addr.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"http.addr: expected HOST:PORT, got {addr!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"http.addr: port out of range in {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"http.addr: bad IPv6 address in {addr!r}") from None
    elif host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _HOSTNAME.match(host):
                raise ConfigError(f"http.addr: {host[:100]!r} is neither an IP address nor a host name "
                                  f"(in {addr[:200]!r})") from None
    return (host or "0.0.0.0"), port


def _s3(tree: Mapping[str, Any]) -> S3Options | None:
    bucket = _str(tree, "storage.s3.bucket")
    if not bucket:
        return None
    chunk = _int(tree, "storage.s3.chunksize", 5 * 1024 * 1024)
    if chunk > 5 * 1024 ** 3:
        raise ConfigError(f"storage.s3.chunksize: at most 5 GiB (S3's largest part), got {chunk}")
    return S3Options(
        bucket=bucket,
        region=_str(tree, "storage.s3.region") or "us-east-1",
        regionendpoint=_str(tree, "storage.s3.regionendpoint"),
        rootdirectory=_str(tree, "storage.s3.rootdirectory"),
        accesskey=_str(tree, "storage.s3.accesskey"),
        secretkey=_str(tree, "storage.s3.secretkey"),
        secure=_bool(tree, "storage.s3.secure"),
        v4auth=_bool(tree, "storage.s3.v4auth"),
        chunksize=chunk,
        multipartcopythresholdsize=_int(tree, "storage.s3.multipartcopythresholdsize", 0),
        multipartcopychunksize=_int(tree, "storage.s3.multipartcopychunksize", 5 * 1024 * 1024),
        redirect=_bool(tree, "storage.redirect.enabled"),
        redirectexpiry=_int(tree, "storage.redirect.expiry", 1),
    )


def _redis(tree: Mapping[str, Any]) -> RedisSettings | None:
    addr = _str(tree, "redis.addr")
    if not addr:
        return None
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"redis.addr: expected HOST:PORT, got {addr!r}")
    return RedisSettings(host.strip("[]"), int(port), _str(tree, "redis.password"), _int(tree, "redis.db"))


def validate(tree: Mapping[str, Any], base_dir: Path) -> Settings:
    host, port = parse_addr(_str(tree, "http.addr"))
    certs_dir = _path(tree, "http.tls.directory", base_dir, Path("certs"))
    auth_dir = _path(tree, "auth.directory", base_dir, Path("auth"))
    public_url = _str(tree, "http.host").rstrip("/")
    if public_url and not public_url.startswith(("https://", "http://")):
        raise ConfigError(f"http.host: expected a URL such as https://registry.example.com:5000, got {public_url!r}")
    access_format = _str(tree, "log.accesslog.format")
    if access_format not in ("json", "text"):
        raise ConfigError(f"log.accesslog.format: expected json or text, got {access_format!r}")
    level = _str(tree, "log.level").lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log.level: expected debug, info, warning or error, got {level!r}")
    proxy_protocol = _networks(tree, "http.proxyprotocol")
    return Settings(
        host=host,
        port=port,
        public_url=public_url,
        workers=_workers(tree),
        http2=_bool(tree, "http.http2"),
        insecure=_bool(tree, "http.insecure"),
        header_timeout=_int(tree, "http.timeouts.header", 1),
        body_timeout=_int(tree, "http.timeouts.body", 1),
        idle_timeout=_int(tree, "http.timeouts.idle", 1),
        max_connections=_int(tree, "http.limits.connections", 1),
        max_connections_per_client=_int(tree, "http.limits.perclient", 1),
        tls=TLSSettings(
            certificate=_path(tree, "http.tls.certificate", base_dir, certs_dir / "server.crt"),
            key=_path(tree, "http.tls.key", base_dir, certs_dir / "server.key"),
            directory=certs_dir,
            autogenerate=_bool(tree, "http.tls.autogenerate"),
        ),
        storage_root=_path(tree, "storage.filesystem.rootdirectory", base_dir, Path("data")),
        storage_direct_io=_bool(tree, "storage.filesystem.directio"),
        storage_s3=_s3(tree),
        redis=_redis(tree),
        delete_enabled=_bool(tree, "storage.delete.enabled"),
        readonly=_bool(tree, "storage.maintenance.readonly.enabled"),
        upload_purge_enabled=_bool(tree, "storage.maintenance.uploadpurging.enabled"),
        upload_purge_age=_int(tree, "storage.maintenance.uploadpurging.age", 1),
        upload_purge_interval=_int(tree, "storage.maintenance.uploadpurging.interval", 1),
        manifest_max_size=_int(tree, "validation.manifests.maxsize", 1024),
        auth=AuthSettings(
            enabled=_bool(tree, "auth.enabled"),
            directory=auth_dir,
            htpasswd=_path(tree, "auth.htpasswd", base_dir, auth_dir / "htpasswd"),
            policy=_path(tree, "auth.policy", base_dir, auth_dir / "policy.yaml"),
            token=TokenSettings(
                realm=_str(tree, "auth.token.realm"),
                service=_str(tree, "auth.token.service") or "secreg",
                issuer=_str(tree, "auth.token.issuer") or "secreg",
                key=_path(tree, "auth.token.key", base_dir, certs_dir / "token.key"),
                certificate=_path(tree, "auth.token.certificate", base_dir, certs_dir / "token.crt"),
                expiration=_int(tree, "auth.token.expiration", 1),
                refresh_expiration=_int(tree, "auth.token.refreshexpiration", 1),
                max_body=_int(tree, "auth.token.maxbody", 1024),
                reuse=_int(tree, "auth.token.reuse", 0),
            ),
            ratelimit=RateLimitSettings(
                attempts=_int(tree, "auth.ratelimit.attempts", 1),
                window=_int(tree, "auth.ratelimit.window", 1),
                lockout=_int(tree, "auth.ratelimit.lockout", 1),
            ),
        ),
        log_level=level,
        access_log_format=access_format,
        access_log_enabled=not _bool(tree, "log.accesslog.disabled"),
        audit_file=_path(tree, "log.audit.file", base_dir, Path()) if _str(tree, "log.audit.file") else None,
        metrics_enabled=_bool(tree, "metrics.enabled"),
        metrics_token=_str(tree, "metrics.token"),
        gc_schedule_enabled=_bool(tree, "gc.schedule.enabled"),
        gc_interval=_int(tree, "gc.schedule.interval", 1),
        gc_delay=_int(tree, "gc.schedule.delay", 0),
        gc_grace=_int(tree, "gc.grace", 0),
        ui=UISettings(
            enabled=_bool(tree, "ui.enabled"),
            session_lifetime=_int(tree, "ui.session.lifetime", 60),
        ),
        raw=copy.deepcopy(dict(tree)),
        proxy=_proxy(tree, base_dir),
        tag_cache_max_age=_int(tree, "storage.cache.tagmaxage", 0),
        event_loop=_event_loop(tree, proxy_protocol),
        tls_transport=_tls_transport(tree),
        trusted_proxies=_networks(tree, "http.trustedproxies"),
        proxy_protocol=proxy_protocol,
    )


def _networks(tree: Mapping[str, Any], dotted: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """`http.trustedproxies`, `http.proxyprotocol`: a list of CIDRs, or one string of them separated by commas (the
    environment)."""
    value = _get(tree, dotted)
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{dotted}: expected a list of CIDRs such as [10.0.0.0/8], got {value!r}")
    networks = []
    for text in value:
        try:
            networks.append(ipaddress.ip_network(text.strip()))
        except ValueError as exc:
            raise ConfigError(f"{dotted}: {text.strip()!r} is not an IP network such as 10.0.0.0/8 or "
                              f"2001:db8::/32 ({exc})") from None
    return tuple(networks)


def _proxy(tree: Mapping[str, Any], base_dir: Path) -> ProxySettings:
    try:
        return parse_proxy(tree.get("proxy"), base_dir)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
