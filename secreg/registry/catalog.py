"""The repository list and each repository's tag list without a walk of storage per request.

A walk lists every directory under `repositories/`: ~240 ms for a catalog page with 10,000 repositories here,
against ~12 ms with 100. The list is kept in memory instead, and kept true across worker processes and
replicas through one small file in storage per list (`layout.CATALOG_GENERATION`, `layout.tags_generation`),
read through the driver (so an object store works the same). A tags page of 100 took ~30 ms with 10,000 tags
(one listing of 10,000 directories) against ~1 ms with 100.

- a write that makes a repository appear (its first `_layers` link or its first manifest revision), or a tag
  appear or go away, replaces that file with a new random token after the write;
- a reader compares the token with the one its list was built under and walks again when it differs, so a
  repository pushed through any secreg process is listed by every process at its next catalog request (a walk
  per new repository and process, not per request);
- a list older than `MAX_AGE` is walked again in the background (the stale one is served meanwhile), for
  what changes the tree without a token: another registry on the same storage, a restore from backup.

Repositories are never removed by secreg (deleting every manifest and link leaves the directories).
"""

from __future__ import annotations

import bisect
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from secreg.storage import layout
from secreg.storage.driver import PathNotFound, StorageDriver

MAX_AGE = 60.0
TAG_LISTS = 1024  # repositories whose tag list is kept in memory (least recently used dropped first)
log = logging.getLogger("secreg.registry")

Load = Callable[[], list[str]]


class Listing:
    """One sorted list of names in memory, valid while the token at `token_path` is the one it was built
    under (see the module docstring); `load` builds it from storage."""

    def __init__(self, driver: StorageDriver, token_path: str, load: Load, max_age: float = MAX_AGE) -> None:
        self._driver = driver
        self._token_path = token_path
        self._load = load
        self._max_age = max_age
        self._lock = threading.Lock()
        self._names: list[str] | None = None
        self._known: set[str] = set()
        self._token: bytes | None = None
        self._built_at = 0.0
        self._refreshing = False

    def _read_token(self) -> bytes | None:
        try:
            return self._driver.read_bytes(self._token_path)
        except PathNotFound:
            return None

    def _rebuild(self) -> list[str]:
        token = self._read_token()  # before loading: a name added meanwhile changes the token again
        names = self._load()
        with self._lock:
            self._names, self._known, self._token = names, set(names), token
            self._built_at = time.monotonic()
            self._refreshing = False
        return names

    def names(self) -> list[str]:
        """Every name in lexical order (blocking: it may walk storage)."""
        token = self._read_token()
        with self._lock:
            names, current = self._names, self._token
            stale = time.monotonic() - self._built_at > self._max_age and not self._refreshing
            if names is not None and token == current and stale:
                self._refreshing = True
        if names is None or token != current:
            return list(self._rebuild())
        if stale:
            threading.Thread(target=self._refresh, name="secreg-listing", daemon=True).start()
        return list(names)

    def _refresh(self) -> None:
        try:
            self._rebuild()
        except Exception:  # a failed background load leaves the old list; the next request tries again
            log.exception("listing %s: background load failed", self._token_path)
            with self._lock:
                self._refreshing = False

    def knows(self, name: str) -> bool:
        return name in self._known

    def changed(self, added: str | None = None) -> None:
        """After a write that added or removed a name: a new token for every process; `added` is listed here
        at once. The token this list was built under stays, so its next read loads again and picks up what
        another process changed between our last load and this write."""
        _new_token(self._driver, self._token_path)
        if added is None:
            return
        with self._lock:
            if self._names is not None and added not in self._known:
                bisect.insort(self._names, added)
                self._known.add(added)


class RepositoryIndex:
    """The catalog, and the tag list of each repository, as `Listing`s."""

    def __init__(self, driver: StorageDriver, walk: Callable[[StorageDriver], list[str]],
                 max_age: float = MAX_AGE) -> None:
        self._driver = driver
        self._max_age = max_age
        self.catalog = Listing(driver, layout.CATALOG_GENERATION, lambda: walk(driver), max_age)
        self._tags: OrderedDict[str, Listing] = OrderedDict()
        self._tags_lock = threading.Lock()

    def names(self) -> list[str]:
        return self.catalog.names()

    def appears(self, name: str, marker: str) -> Callable[[], None]:
        """Before a write that may create `marker` (a `_layers` or `_manifests` directory of `name`): returns
        what to call after the write. It announces the repository when the marker did not exist before."""
        if self.catalog.knows(name) or self._driver.exists(marker):
            return _nothing
        return lambda: self.catalog.changed(added=name)

    def tags(self, name: str, load: Load) -> Listing:
        """The tag list of `name` (`load` lists its tag directories, sorted)."""
        with self._tags_lock:
            listing = self._tags.get(name)
            if listing is None:
                listing = Listing(self._driver, layout.tags_generation(name), load, self._max_age)
                self._tags[name] = listing
                while len(self._tags) > TAG_LISTS:
                    self._tags.popitem(last=False)
            self._tags.move_to_end(name)
            return listing

    def tag_changes(self, name: str, tag: str, deleted: bool = False) -> Callable[[], None]:
        """Before writing or deleting tag `tag` of `name`: what to call after it. Only a tag that appears or
        goes away changes the list (re-pointing one does not)."""
        if not deleted and self._driver.exists(layout.tag_dir(name, tag)):
            return _nothing

        def after() -> None:
            with self._tags_lock:
                listing = self._tags.get(name)
            if listing is None:  # not listed in this process: only the others need to know
                _new_token(self._driver, layout.tags_generation(name))
            else:
                listing.changed(added=None if deleted else tag)

        return after


def _nothing() -> None:
    return None


def _new_token(driver: StorageDriver, path: str) -> None:
    # Not durable (two fsyncs less per push of a new tag or repository): a token lost in a crash of the machine
    # is an older one, or an empty file, and differs from the one any list built after it was written was
    # built under, so those lists are walked again; a list built before it (another host sharing the storage)
    # is walked again within MAX_AGE.
    driver.write_bytes(path, secrets.token_hex(16).encode(), durable=False)
