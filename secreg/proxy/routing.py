"""Which upstream a repository name belongs to, and what it is called there.

A name is proxied when
  1. the request carries containerd's `?ns=HOST` and HOST is one of an upstream's hosts: the name is the
     upstream's own, cached locally under the upstream's prefix (`?ns=docker.io`, `library/ubuntu` ->
     `hub/library/ubuntu`);
  2. it lies under an upstream's prefix, component by component (`hub/library/ubuntu`; not `hubx/...`); the
     longest prefix wins;
  3. it is a Docker Hub official-image name (`library/...`) and an upstream is the default for Docker Hub
     (`dockerhub: true`): what a docker engine with `registry-mirrors` asks for;
  4. an upstream has the empty prefix (the reference registry's `proxy.remoteurl`): every other name.
Otherwise it is one of our own repositories. The upstream name is always a validated repository name, so it
cannot climb out of the prefix or the upstream's `/v2/` tree.
"""

from __future__ import annotations

from dataclasses import dataclass

from secreg.config.proxy import ProxySettings, Upstream
from secreg.errors import ErrorCode, RegistryError
from secreg.names import MAX_NAME_LENGTH, NAME_PATTERN

DOCKER_HUB_OFFICIAL = "library/"


@dataclass(frozen=True)
class ProxiedName:
    upstream: Upstream
    local: str  # the repository that holds the cached content here
    remote: str  # the repository's name on the upstream


class Router:
    def __init__(self, settings: ProxySettings) -> None:
        self.upstreams = settings.upstreams
        self._by_host = {host: u for u in settings.upstreams for host in u.hosts}
        self._prefixed = sorted((u for u in settings.upstreams if u.prefix), key=lambda u: -len(u.prefix))
        self._hub = next((u for u in settings.upstreams if u.dockerhub), None)
        self._root = next((u for u in settings.upstreams if not u.prefix), None)

    def upstream_of_host(self, host: str) -> Upstream | None:
        return self._by_host.get(host.strip().lower())

    def resolve(self, name: str, ns: str | None = None) -> ProxiedName | None:
        """The upstream behind `name` (already validated), or None for a repository of our own."""
        if ns:
            upstream = self.upstream_of_host(ns)
            if upstream is not None:
                return _proxied(upstream, name)
        for upstream in self._prefixed:
            if name == upstream.prefix:
                raise RegistryError(
                    ErrorCode.NAME_INVALID,
                    f"{name!r} is the prefix of the pull-through cache of {upstream.name}; name a repository "
                    f"under it, such as {name}/library/alpine",
                    {"name": name},
                )
            if name.startswith(upstream.prefix + "/"):
                return ProxiedName(upstream, name, _checked_remote(name[len(upstream.prefix) + 1:], name))
        if self._hub is not None and name.startswith(DOCKER_HUB_OFFICIAL):
            return _proxied(self._hub, name)
        if self._root is not None:
            return ProxiedName(self._root, name, _checked_remote(name, name))
        return None

    def is_cached_name(self, name: str) -> Upstream | None:
        """The upstream whose cache a stored repository belongs to, judged by its name alone."""
        for upstream in self._prefixed:
            if name.startswith(upstream.prefix + "/"):
                return upstream
        return self._root


def _proxied(upstream: Upstream, remote: str) -> ProxiedName:
    remote = _checked_remote(remote, remote)
    local = f"{upstream.prefix}/{remote}" if upstream.prefix else remote
    if len(local) > MAX_NAME_LENGTH:
        raise RegistryError(ErrorCode.NAME_INVALID, "repository name too long once the cache prefix is added",
                            {"name": local[:300]})
    return ProxiedName(upstream, local, remote)


def _checked_remote(remote: str, asked: str) -> str:
    # A second fence: names reaching here are validated already; nothing that could climb out of the
    # prefix or change the upstream URL's path ever leaves the machine.
    if not remote or len(remote) > MAX_NAME_LENGTH or not NAME_PATTERN.match(remote):
        raise RegistryError(ErrorCode.NAME_INVALID, "invalid repository name", {"name": asked[:300]})
    return remote
