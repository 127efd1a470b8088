"""Repository descriptions for `docker search`: the `org.opencontainers.image.description` of the newest
tagged image, taken from the manifest's (or index's) annotations, else from the image config's labels.

At most one manifest and one config are read per repository, and the answer is cached by manifest digest
(manifests and configs are immutable), so a repeated search costs a tag listing and a few stats.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from secreg import jsonlimit
from secreg.digest import Digest
from secreg.errors import RegistryError
from secreg.registry.blobs import BlobStore
from secreg.registry.errors import ModelError
from secreg.registry.manifests import ManifestStore
from secreg.storage import layout
from secreg.storage.driver import PathNotFound, StorageDriver

DESCRIPTION = "org.opencontainers.image.description"
MAX_CONFIG_BYTES = 1024 * 1024
MAX_DESCRIPTION = 1000


def _text(value: Any) -> str:
    return value.strip()[:MAX_DESCRIPTION] if isinstance(value, str) else ""


class Descriptions:
    def __init__(self, driver: StorageDriver, manifests: ManifestStore, blobs: BlobStore,
                 cache_size: int = 4096) -> None:
        self.driver = driver
        self.manifests = manifests
        self.blobs = blobs
        self._cache: OrderedDict[Digest, str] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def of(self, name: str) -> str:
        """The description of repository `name`; "" when it has no tag or no description."""
        digest = self._newest_tagged(name)
        if digest is None:
            return ""
        with self._lock:
            cached = self._cache.get(digest)
            if cached is not None:
                self._cache.move_to_end(digest)
                return cached
        description = self._read(name, digest)
        with self._lock:
            self._cache[digest] = description
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return description

    def _newest_tagged(self, name: str) -> Digest | None:
        """What the most recently written tag points at."""
        newest: tuple[float, str] | None = None
        for tag in self.manifests.tags(name, missing_ok=True):
            try:
                mtime = self.driver.stat(layout.tag_current_link(name, tag)).mtime
            except PathNotFound:
                continue
            if newest is None or (mtime, tag) > newest:
                newest = (mtime, tag)
        if newest is None:
            return None
        try:
            return self.manifests.resolve(name, newest[1])
        except (RegistryError, ModelError):
            return None

    def _read(self, name: str, digest: Digest) -> str:
        try:
            document = jsonlimit.loads(self.manifests.get(name, digest).content)
        except (RegistryError, ModelError, ValueError):
            return ""
        if not isinstance(document, dict):
            return ""
        annotations = document.get("annotations")
        if isinstance(annotations, dict) and _text(annotations.get(DESCRIPTION)):
            return _text(annotations[DESCRIPTION])
        config = document.get("config")
        if not isinstance(config, dict):
            return ""  # an index: its annotations are all we read
        try:
            config_digest = Digest.parse(str(config.get("digest", "")))
            info = self.blobs.stat(name, config_digest)
            if info.size > MAX_CONFIG_BYTES:
                return ""
            image = jsonlimit.loads(self.driver.read_bytes(info.path))
        except (RegistryError, ModelError, PathNotFound, ValueError):
            return ""
        runtime = image.get("config") if isinstance(image, dict) else None
        labels = runtime.get("Labels") if isinstance(runtime, dict) else None
        return _text(labels.get(DESCRIPTION)) if isinstance(labels, dict) else ""
