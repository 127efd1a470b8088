"""The `proxy:` configuration: upstream lists, the registry:2 shape, env and flags; and name routing."""

from __future__ import annotations

from pathlib import Path

import pytest

from secreg.config import ConfigError, load_settings
from secreg.config.proxy import parse_duration, parse_size
from secreg.errors import RegistryError
from secreg.proxy.routing import Router


def settings(tmp_path: Path, proxy: object, environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return load_settings(overrides={"proxy": proxy} if proxy is not None else None, environ=environ or {},
                         base_dir=tmp_path)


def test_upstreams_are_parsed(tmp_path: Path) -> None:
    (tmp_path / "hub.pw").write_text("s3cret\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    s = settings(tmp_path, {"upstreams": [
        {"name": "hub", "url": "https://registry-1.docker.io", "prefix": "hub", "ttl": "10m", "dockerhub": True,
         "username": "me", "passwordfile": "hub.pw", "maxsize": "20GiB", "maxage": "30d"},
        {"name": "ghcr", "url": "https://ghcr.io/", "prefix": "mirror/ghcr", "ttl": 90, "ca": "ca.pem"},
    ]})
    hub, ghcr = s.proxy.upstreams
    assert (hub.name, hub.url, hub.prefix, hub.ttl, hub.password) == ("hub", "https://registry-1.docker.io",
                                                                      "hub", 600, "s3cret")
    assert hub.maxsize == 20 * 1024**3 and hub.maxage == 30 * 86400
    assert "docker.io" in hub.hosts and "s3cret" not in repr(s)
    assert (ghcr.url, ghcr.prefix, ghcr.ttl, ghcr.ca) == ("https://ghcr.io", "mirror/ghcr", 90, tmp_path / "ca.pem")
    assert ghcr.hosts == ("ghcr.io",)


def test_reference_registry_shape_is_one_default_upstream(tmp_path: Path) -> None:
    s = settings(tmp_path, {"remoteurl": "https://registry-1.docker.io", "username": "u", "password": "p",
                            "ttl": "168h"})
    (default,) = s.proxy.upstreams
    assert (default.name, default.prefix, default.dockerhub, default.maxage) == ("default", "", True, 168 * 3600)


def test_environment_sets_upstreams(tmp_path: Path) -> None:
    s = settings(tmp_path, None, {"SECREG_PROXY_UPSTREAMS": "[{name: q, url: 'https://quay.io', prefix: quay}]",
                                  "SECREG_PROXY_REMOTEURL": "https://registry-1.docker.io"})
    assert [u.name for u in s.proxy.upstreams] == ["q", "default"]


@pytest.mark.parametrize("upstream, message", [
    ({"name": "a", "url": "http://plain.example", "prefix": "a"}, "HTTPS only"),
    ({"name": "a", "url": "https://x.example/path", "prefix": "a"}, "without a path"),
    ({"name": "a", "url": "https://u:p@x.example", "prefix": "a"}, "without credentials"),
    ({"name": "a", "url": "https://x.example", "prefix": "../a"}, "prefix"),
    ({"name": "a", "url": "https://x.example"}, "prefix"),
    ({"name": "A!", "url": "https://x.example", "prefix": "a"}, "name"),
    ({"name": "a", "url": "https://x.example", "prefix": "a", "ttl": "soon"}, "duration"),
    ({"name": "a", "url": "https://x.example", "prefix": "a", "username": "u"}, "go together"),
    ({"name": "a", "url": "https://x.example", "prefix": "a", "colour": "red"}, "unknown key"),
    ({"name": "a", "url": "https://x.example", "prefix": "a", "ca": "/nonexistent/ca.pem"}, "no such file"),
])
def test_bad_upstreams_are_refused(tmp_path: Path, upstream: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(tmp_path, {"upstreams": [upstream]})


def test_conflicting_upstreams_are_refused(tmp_path: Path) -> None:
    a = {"name": "a", "url": "https://a.example", "prefix": "mirror"}
    with pytest.raises(ConfigError, match="inside prefix"):
        settings(tmp_path, {"upstreams": [a, {"name": "b", "url": "https://b.example", "prefix": "mirror/b"}]})
    with pytest.raises(ConfigError, match="named"):
        settings(tmp_path, {"upstreams": [a, {**a, "prefix": "other"}]})
    with pytest.raises(ConfigError, match="only one upstream"):
        settings(tmp_path, {"upstreams": [{**a, "dockerhub": True},
                                          {"name": "b", "url": "https://b.example", "prefix": "b", "dockerhub": True}]})
    with pytest.raises(ConfigError, match="unknown key"):
        settings(tmp_path, {"remotes": []})


def test_durations_and_sizes() -> None:
    assert parse_duration("1h30m", "x") == 5400 and parse_duration(5, "x") == 5 and parse_duration("2d", "x") == 172800
    assert parse_size("500MB", "x") == 500_000_000 and parse_size("1GiB", "x") == 1024**3 and parse_size(10, "x") == 10
    with pytest.raises(ValueError):
        parse_size("-1", "x")


def test_routing(tmp_path: Path) -> None:
    s = settings(tmp_path, {"upstreams": [
        {"name": "hub", "url": "https://registry-1.docker.io", "prefix": "hub", "dockerhub": True},
        {"name": "ghcr", "url": "https://ghcr.io", "prefix": "mirror/ghcr"},
    ]})
    router = Router(s.proxy)
    hub = router.resolve("hub/library/ubuntu")
    assert hub is not None and (hub.upstream.name, hub.local, hub.remote) == ("hub", "hub/library/ubuntu",
                                                                               "library/ubuntu")
    short = router.resolve("library/ubuntu")
    assert short is not None and (short.local, short.remote) == ("hub/library/ubuntu", "library/ubuntu")
    ns = router.resolve("owner/tool", ns="ghcr.io")
    assert ns is not None and (ns.upstream.name, ns.local, ns.remote) == ("ghcr", "mirror/ghcr/owner/tool",
                                                                          "owner/tool")
    docker_io = router.resolve("library/alpine", ns="docker.io")
    assert docker_io is not None and docker_io.local == "hub/library/alpine"
    assert router.resolve("hubx/app") is None and router.resolve("team/app") is None
    assert router.resolve("team/app", ns="unknown.example") is None
    with pytest.raises(RegistryError):
        router.resolve("hub")


def test_eviction_interval_and_reference_shape_extensions(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    s = settings(tmp_path, None, {"SECREG_PROXY_EVICTION_INTERVAL": "2m", "SECREG_PROXY_REMOTEURL": "https://r.example",
                                  "SECREG_PROXY_USERNAME": "u", "SECREG_PROXY_PASSWORDFILE": "pw",
                                  "SECREG_PROXY_CA": "ca.pem"})
    (default,) = s.proxy.upstreams
    assert s.proxy.evict_interval == 120 and default.password == "s3cret" and default.ca == tmp_path / "ca.pem"
    assert settings(tmp_path, None).proxy.evict_interval == 600
    with pytest.raises(ConfigError, match="at least 1 second"):
        settings(tmp_path, {"eviction": {"interval": "500ms"}})


def test_upstream_flag_syntax() -> None:
    from secreg.config.proxy import parse_upstream_flag

    assert parse_upstream_flag("name=hub,url=https://h.example,prefix=hub,dockerhub=true,hosts=a.io,hosts=b.io") == {
        "name": "hub", "url": "https://h.example", "prefix": "hub", "dockerhub": True, "hosts": ["a.io", "b.io"]}
    for bad, message in [("name", "KEY=VALUE"), ("name=a,name=b", "twice"), ("dockerhub=maybe", "true or false"),
                         ("password=x", "passwordfile"), ("colour=red", "unknown key")]:
        with pytest.raises(ValueError, match=message):
            parse_upstream_flag(bad)
