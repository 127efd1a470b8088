"""The `proxy:` section: the upstream registries secreg caches, validated once into frozen values.

    proxy:
      upstreams:
        - name: hub                      # [a-z0-9-], used in logs, metrics and the catalog
          url: https://registry-1.docker.io
          ca: /etc/secreg/hub-ca.pem     # optional: trust this CA file (PEM) instead of the system store
          username: mirror               # optional credentials for the upstream's token flow or Basic
          password: ...                  # or passwordfile: /run/secrets/hub (first line)
          prefix: hub                    # local names hub/<name> are <name> upstream
          ttl: 10m                       # how long a tag resolution is trusted before a HEAD revalidates it
          dockerhub: true                # the default for Docker Hub names (library/..., ?ns=docker.io)
          hosts: [docker.io]             # containerd ?ns= hosts routed here (the url's host always is)
          maxsize: 20GiB                 # optional bounds on what is kept of this upstream
          maxage: 30d
      # The reference registry's shape, accepted as one more upstream (name "default", prefix "", every
      # name outside the other prefixes is proxied, as registry:2 in proxy mode does):
      remoteurl: https://registry-1.docker.io
      username: ...
      password: ...                      # or passwordfile: (a secreg extension, as is ca:)
      ttl: 168h                          # registry:2's meaning: how long cached content is kept (maxage)
      eviction:
        interval: 10m                    # how often the server applies maxage/maxsize (default 600 s)

Parsing raises `ValueError` with the key path in the message; `secreg.config` turns it into a ConfigError.
Credentials are kept out of every `repr`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from secreg.names import NAME_PATTERN

DEFAULT_TTL = 300
DOCKER_HUB_HOSTS = ("docker.io", "registry-1.docker.io", "index.docker.io")
_UPSTREAM_KEYS = frozenset({"name", "url", "ca", "username", "password", "passwordfile", "prefix", "ttl",
                            "dockerhub", "hosts", "maxsize", "maxage"})
PROXY_KEYS = frozenset({"upstreams", "remoteurl", "username", "password", "passwordfile", "ca", "ttl", "eviction"})
DEFAULT_EVICT_INTERVAL = 600.0
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62})\Z")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?i?b?)$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
               "t": 1000**4, "tb": 1000**4, "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2,
               "gi": 1024**3, "gib": 1024**3, "ti": 1024**4, "tib": 1024**4, "p": 1000**5, "pb": 1000**5,
               "pi": 1024**5, "pib": 1024**5}


@dataclass(frozen=True)
class Upstream:
    name: str
    url: str  # https://host[:port], no trailing slash, no path
    prefix: str  # "" only for the reference-registry-shaped default: the whole namespace outside other prefixes
    ttl: float
    ca: Path | None = None
    username: str = ""
    password: str = field(default="", repr=False)
    dockerhub: bool = False
    hosts: tuple[str, ...] = ()  # every ?ns= value routed here, lowercase; the url's host[:port] included
    maxsize: int | None = None
    maxage: float | None = None

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc


@dataclass(frozen=True)
class ProxySettings:
    upstreams: tuple[Upstream, ...] = ()
    evict_interval: float = DEFAULT_EVICT_INTERVAL  # seconds between two maxage/maxsize passes in the server

    @property
    def enabled(self) -> bool:
        return bool(self.upstreams)


def parse_duration(value: Any, where: str) -> float:
    """Seconds from a number or a duration text such as `90`, `10m`, `1h30m`, `7d`."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected seconds or a duration such as 10m, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif re.fullmatch(rf"(?:{_DURATION.pattern})+", text):
            seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(text))
        else:
            raise ValueError(f"{where}: expected seconds or a duration such as 10m, 1h30m or 7d, got {value!r}")
    else:
        raise ValueError(f"{where}: expected seconds or a duration such as 10m, got {value!r}")
    if seconds < 0:
        raise ValueError(f"{where}: must not be negative")
    return seconds


def parse_size(value: Any, where: str) -> int:
    """Bytes from a number or a size text such as `500MB`, `20GiB`."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected bytes or a size such as 20GiB, got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value).strip())
        if not match or match.group(2).lower() not in _SIZE_UNITS:
            raise ValueError(f"{where}: expected bytes or a size such as 500MB or 20GiB, got {value!r}")
        size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    if size <= 0:
        raise ValueError(f"{where}: must be positive")
    return size


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{where}.{key}: expected a string")
    return str(value)


def _url(text: str, where: str) -> str:
    if not text:
        raise ValueError(f"{where}: an upstream needs a url (https://host[:port])")
    parts = urlsplit(text)
    if parts.scheme != "https":
        raise ValueError(f"{where}: upstreams are reached over HTTPS only, got {text!r}")
    if not parts.hostname or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{where}: expected https://host[:port] without credentials, query or fragment")
    if parts.path not in ("", "/"):
        raise ValueError(f"{where}: expected https://host[:port] without a path, got {text!r}")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"{where}: bad port in {text!r}") from None
    return f"https://{parts.netloc}"


def _password(entry: Mapping[str, Any], where: str, base_dir: Path) -> str:
    password = _text(entry, "password", where)
    password_file = _text(entry, "passwordfile", where)
    if password and password_file:
        raise ValueError(f"{where}: give password or passwordfile, not both")
    if not password_file:
        return password
    path = Path(password_file).expanduser()
    path = path if path.is_absolute() else base_dir / path
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"{where}.passwordfile: cannot read {path}: {exc.strerror}") from None
    return lines[0].strip() if lines else ""


def _ca(entry: Mapping[str, Any], where: str, base_dir: Path) -> Path | None:
    ca_text = _text(entry, "ca", where)
    if not ca_text:
        return None
    ca = Path(ca_text).expanduser()
    ca = ca if ca.is_absolute() else base_dir / ca
    if not ca.is_file():
        raise ValueError(f"{where}.ca: no such file {ca}")
    return ca


def _upstream(entry: Any, where: str, base_dir: Path) -> Upstream:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a mapping with name, url and prefix")
    unknown = sorted(set(entry) - _UPSTREAM_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(str, unknown))} "
                         f"(known: {', '.join(sorted(_UPSTREAM_KEYS))})")
    name = _text(entry, "name", where)
    if not _NAME.match(name):
        raise ValueError(f"{where}.name: expected 1-63 characters of [a-z0-9-], got {name!r}")
    where = f"{where} ({name})"
    url = _url(_text(entry, "url", where), f"{where}.url")
    prefix = _text(entry, "prefix", where).strip("/")
    if not prefix or not NAME_PATTERN.match(prefix):
        raise ValueError(f"{where}.prefix: expected a repository-name prefix such as hub or mirror/ghcr, "
                         f"got {prefix!r}")
    ca = _ca(entry, where, base_dir)
    username = _text(entry, "username", where)
    password = _password(entry, where, base_dir)
    if bool(username) != bool(password):
        raise ValueError(f"{where}: username and password go together")
    dockerhub = entry.get("dockerhub", False)
    if not isinstance(dockerhub, bool):
        raise ValueError(f"{where}.dockerhub: expected true or false")
    hosts_value = entry.get("hosts") or []
    if isinstance(hosts_value, str):
        hosts_value = [h for h in hosts_value.split(",") if h.strip()]
    if not isinstance(hosts_value, Sequence) or not all(isinstance(h, str) for h in hosts_value):
        raise ValueError(f"{where}.hosts: expected a list of host names")
    hosts = [urlsplit(url).netloc.lower(), *(h.strip().lower() for h in hosts_value)]
    if dockerhub:
        hosts.extend(DOCKER_HUB_HOSTS)
    return Upstream(
        name=name,
        url=url,
        prefix=prefix,
        ttl=parse_duration(entry.get("ttl", DEFAULT_TTL), f"{where}.ttl"),
        ca=ca,
        username=username,
        password=password,
        dockerhub=dockerhub,
        hosts=tuple(dict.fromkeys(hosts)),
        maxsize=parse_size(entry["maxsize"], f"{where}.maxsize") if entry.get("maxsize") else None,
        maxage=parse_duration(entry["maxage"], f"{where}.maxage") if entry.get("maxage") else None,
    )


def parse_proxy(section: Any, base_dir: Path) -> ProxySettings:
    """Validate the `proxy:` mapping (defaults merged in) into ProxySettings."""
    if section is None:
        return ProxySettings()
    if not isinstance(section, Mapping):
        raise ValueError("proxy: expected a mapping")
    unknown = sorted(set(section) - PROXY_KEYS)
    if unknown:
        known = ", ".join(sorted(PROXY_KEYS))
        raise ValueError(f"proxy: unknown key(s) {', '.join(map(str, unknown))} (known: {known})")
    entries = section.get("upstreams") or []
    if not isinstance(entries, Sequence) or isinstance(entries, (str, bytes)):
        raise ValueError("proxy.upstreams: expected a list of upstreams")
    upstreams = [_upstream(entry, f"proxy.upstreams[{i}]", base_dir) for i, entry in enumerate(entries)]
    remote = _text(section, "remoteurl", "proxy")
    if remote:
        # The reference registry's proxy mode: one upstream owning the whole namespace, Docker Hub's default.
        username = _text(section, "username", "proxy")
        password = _password(section, "proxy", base_dir)
        if bool(username) != bool(password):
            raise ValueError("proxy: username and password go together")
        url = _url(remote, "proxy.remoteurl")
        ttl = section.get("ttl")
        upstreams.append(Upstream(
            name="default", url=url, prefix="", ttl=DEFAULT_TTL, username=username, password=password,
            ca=_ca(section, "proxy", base_dir),
            dockerhub=not any(u.dockerhub for u in upstreams),
            hosts=tuple(dict.fromkeys([urlsplit(url).netloc.lower(),
                                       *(DOCKER_HUB_HOSTS if "docker.io" in url else ())])),
            maxage=parse_duration(ttl, "proxy.ttl") if ttl not in (None, "", 0) else None,
        ))
    _check_unique(upstreams)
    return ProxySettings(tuple(upstreams), _evict_interval(section.get("eviction")))


def _evict_interval(section: Any) -> float:
    if section is None:
        return DEFAULT_EVICT_INTERVAL
    if not isinstance(section, Mapping) or set(section) - {"interval"}:
        raise ValueError("proxy.eviction: expected a mapping with interval (seconds or a duration such as 10m)")
    value = section.get("interval")
    if value in (None, ""):
        return DEFAULT_EVICT_INTERVAL
    interval = parse_duration(value, "proxy.eviction.interval")
    if interval < 1:
        raise ValueError(f"proxy.eviction.interval: at least 1 second, got {value!r}")
    return interval


def _check_unique(upstreams: list[Upstream]) -> None:
    seen: dict[str, str] = {}
    for upstream in upstreams:
        if upstream.name in seen:
            raise ValueError(f"proxy.upstreams: two upstreams are named {upstream.name!r}")
        seen[upstream.name] = upstream.name
    prefixes = [u.prefix for u in upstreams if u.prefix]
    for a in prefixes:
        for b in prefixes:
            if a != b and b.startswith(a + "/"):
                raise ValueError(f"proxy.upstreams: prefix {b!r} lies inside prefix {a!r}")
    if len(prefixes) != len(set(prefixes)):
        raise ValueError("proxy.upstreams: two upstreams share a prefix")
    if sum(1 for u in upstreams if u.dockerhub) > 1:
        raise ValueError("proxy.upstreams: only one upstream may be the default for Docker Hub (dockerhub: true)")
    hosts: dict[str, str] = {}
    for upstream in upstreams:
        for host in upstream.hosts:
            if hosts.setdefault(host, upstream.name) != upstream.name:
                raise ValueError(f"proxy.upstreams: host {host!r} is routed to both {hosts[host]!r} and "
                                 f"{upstream.name!r}")


def parse_upstream_flag(text: str) -> dict[str, Any]:
    """`--proxy-upstream name=hub,url=https://...,prefix=hub[,ttl=10m,...]` -> one `proxy.upstreams` entry.

    Keys are those of a file's entry; `hosts=` may be repeated, `dockerhub=` takes true/false. A `password=`
    is refused: the command line is readable by every local user (`ps`), so it takes `passwordfile=` (or the
    password comes from the config file or the environment)."""
    entry: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE items separated by commas (name=hub,url=https://...,prefix=hub), "
                             f"got {item!r}")
        if key == "password":
            raise ValueError("password= is not taken on the command line (any local user can read it with ps); "
                             "use passwordfile=PATH, the config file or SECREG_PROXY_UPSTREAMS")
        if key not in _UPSTREAM_KEYS:
            raise ValueError(f"unknown key {key!r} (known: {', '.join(sorted(_UPSTREAM_KEYS - {'password'}))})")
        if key == "hosts":
            entry.setdefault("hosts", []).append(value)
        elif key in entry:
            raise ValueError(f"{key}= given twice")
        elif key == "dockerhub":
            if value.lower() not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                raise ValueError(f"dockerhub= takes true or false, got {value!r}")
            entry[key] = value.lower() in ("true", "yes", "1", "on")
        else:
            entry[key] = value
    return entry
