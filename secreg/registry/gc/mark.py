"""Mark: what the repositories reference now, and what may therefore go (the plan).

The roots are every repository's `_layers` links and its manifest revisions. A kept revision keeps its manifest
blob and what it references: config and layers, or an index's child manifests. Without `delete_untagged` every
revision is kept; with it only the revisions a tag reaches (directly or through an index), revisions written
within the grace period, and referrers of kept revisions (their `subject` is kept), recursively. The tree is
read through `secreg.storage.layout`'s parsers and the driver interface only.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from secreg import jsonlimit
from secreg.digest import Digest
from secreg.errors import RegistryError
from secreg.registry.errors import ManifestInvalid
from secreg.registry.manifest_format import ParsedManifest, parse_manifest
from secreg.storage import layout
from secreg.storage.driver import PathNotFound, StorageDriver

SWEEP_THREADS = 32  # renames and deletes wait on the disk, not the CPU: overlapping them is what makes a sweep fast
# progress(phase, done, total, bytes): phases "scan", "quarantine", "settle", "recheck", "delete", "uploads"
Progress = Callable[[str, int, int, int], None]


@dataclass
class Repository:
    layers: dict[Digest, str] = field(default_factory=dict)  # digest -> path of the link file
    revisions: dict[Digest, str] = field(default_factory=dict)  # digest -> path of the revision link
    tags: dict[str, Digest] = field(default_factory=dict)  # tag -> current target
    tag_history: dict[Digest, list[str]] = field(default_factory=dict)  # digest -> tags whose index lists it


@dataclass(frozen=True)
class Item:
    """Something to remove. `paths` are moved into quarantine in order (the first decides visibility);
    `marker` is the file whose presence means the item is in place."""

    kind: str  # "blob" | "manifest" | "link"
    repository: str
    digest: Digest
    paths: tuple[str, ...]
    marker: str
    size: int = 0


class Marker:
    """One run's view of the tree: scans, the marks, and the cache of parsed manifests."""

    def __init__(self, driver: StorageDriver, cutoff: float, delete_untagged: bool, run_dir: str,
                 progress: Progress | None = None) -> None:
        self.driver = driver
        self.progress = progress
        self.cutoff = cutoff
        self.delete_untagged = delete_untagged
        self.run_dir = run_dir
        self._parents: set[str] = set()  # directories made under the run directory (local disks)
        self._parsed: dict[Digest, ParsedManifest | None] = {}
        self._refs: dict[Digest, frozenset[Digest]] = {}
        # (repository, upload id) of every session the last `scan` saw a file of: the upload purge's list
        self.sessions: set[tuple[str, str]] = set()

    # --- reading the tree ---------------------------------------------------------------------------

    def scan(self) -> dict[str, Repository]:
        """Links, revisions and tags of every repository, in one walk, which also finds the upload sessions
        (`sessions`). Tags are read only when they decide anything (`delete_untagged`): otherwise every
        revision is kept."""
        repos: dict[str, Repository] = {}
        sessions: set[tuple[str, str]] = set()
        # Without delete_untagged every revision is kept: tags and their history decide nothing, so the
        # walk skips `_manifests/tags` (a third of the directories of a store with a tag per repository).
        prune = None if self.delete_untagged else _tags_directory
        for path in self.driver.walk_paths(layout.REPOSITORIES, prune, layout.link_file_of):
            found = layout.parse_repository_path(path)
            if found is None:
                continue
            if found.kind == "upload" and found.upload_id is not None:
                sessions.add((found.repository, found.upload_id))
                continue
            repo = repos.setdefault(found.repository, Repository())
            if found.kind == "layer" and found.digest is not None:
                repo.layers[found.digest] = path
            elif found.kind == "revision" and found.digest is not None:
                repo.revisions[found.digest] = path
            elif found.kind == "tag" and found.tag is not None and self.delete_untagged:
                target = self._read_link(path)
                if target is not None:
                    repo.tags[found.tag] = target
            elif found.kind == "tag_index" and found.digest is not None and found.tag is not None:
                repo.tag_history.setdefault(found.digest, []).append(found.tag)
        self.sessions = sessions
        return repos

    def scan_blobs(self) -> dict[Digest, tuple[int, str, float]]:
        """Every blob's size, data path and mtime, as the listing gives them."""
        found: dict[Digest, tuple[int, str, float]] = {}
        for info in self.driver.walk_files(layout.BLOBS, layout.blob_file_of):
            digest = layout.parse_blob_path(info.path)
            if digest is not None:
                found[digest] = (info.size, info.path, info.mtime)
        return found

    def _read_link(self, path: str) -> Digest | None:
        try:
            return layout.link_target(self.driver.read_bytes(path))
        except (PathNotFound, RegistryError):
            return None

    def changed_at(self, path: str) -> float:
        """When the file last changed: its mtime, or its ctime on a local disk, which a rename into place sets
        (an upload commit keeps the mtime of the last written chunk). A vanished file counts as new."""
        local = self.driver.local_path(path)
        if local is not None:
            try:
                st = os.stat(local)
            except OSError:
                return math.inf
            return max(st.st_mtime, st.st_ctime)
        try:
            return self.driver.stat(path).mtime
        except PathNotFound:
            return math.inf

    def quarantined(self, path: str) -> str:
        return layout.quarantined(self.run_dir, path)

    # --- what manifests reference -------------------------------------------------------------------

    def _content(self, digest: Digest) -> bytes | None:
        for path in (layout.blob_data(digest), self.quarantined(layout.blob_data(digest))):
            try:
                return self.driver.read_bytes(path)
            except PathNotFound:
                continue
        return None

    def parsed(self, digest: Digest) -> ParsedManifest | None:
        if digest in self._parsed:
            return self._parsed[digest]
        content = self._content(digest)
        if content is None:
            return None  # not cached: the bytes may yet appear
        try:
            result: ParsedManifest | None = parse_manifest(content, None)
        except ManifestInvalid:
            result = None
            self._refs[digest] = frozenset(_any_digests(content))
        self._parsed[digest] = result
        return result

    def references(self, digest: Digest) -> frozenset[Digest]:
        """Blobs and child manifests a manifest references (for one we cannot parse, e.g. schema 1 written
        by another registry: every digest it mentions)."""
        if digest not in self._refs:
            parsed = self.parsed(digest)
            if parsed is None:
                return self._refs.get(digest, frozenset())
            self._refs[digest] = frozenset(d.digest for d in (*parsed.blobs, *parsed.children))
        return self._refs[digest]

    def kept(self, repo: Repository) -> set[Digest]:
        if not self.delete_untagged:
            return set(repo.revisions)
        referrers: dict[Digest, list[Digest]] = {}
        for digest in repo.revisions:
            parsed = self.parsed(digest)
            if parsed is not None and parsed.subject is not None:
                referrers.setdefault(parsed.subject.digest, []).append(digest)
        stack = list(repo.tags.values())
        stack += [d for d, path in repo.revisions.items() if self.changed_at(path) > self.cutoff]
        kept: set[Digest] = set()
        while stack:
            digest = stack.pop()
            if digest in kept or digest not in repo.revisions:
                continue
            kept.add(digest)
            parsed = self.parsed(digest)
            if parsed is not None:
                stack.extend(child.digest for child in parsed.children)
            else:  # unreadable: whatever it may reference stays
                stack.extend(self.references(digest))
            stack.extend(referrers.get(digest, ()))
        return kept

    def marked(self, repos: dict[str, Repository], kept: dict[str, set[Digest]]) -> set[Digest]:
        marked: set[Digest] = set()
        for name, repo in repos.items():
            marked.update(repo.layers)
            for digest in kept[name]:
                marked.add(digest)
                marked.update(self.references(digest))
        return marked

    # --- deciding -----------------------------------------------------------------------------------

    def plan(self, repos: dict[str, Repository], blobs: dict[Digest, tuple[int, str, float]], *,
             exact: bool = True) -> list[Item]:
        """What to remove. Not `exact`, a blob is judged by the listing's mtime alone (no stat): the list may
        hold blobs whose ctime is recent, which `recheck` (it stats every item) drops before any rename."""
        kept = {name: self.kept(repo) for name, repo in repos.items()}
        marked = self.marked(repos, kept)
        items: list[Item] = []
        for name, repo in sorted(repos.items()):
            for digest in sorted(set(repo.revisions) - kept[name]):
                items.append(self._manifest_item(name, digest, repo))
        candidates = sorted(((digest, size, path, mtime) for digest, (size, path, mtime) in blobs.items()
                             if digest not in marked and mtime <= self.cutoff), key=_by_digest)
        changes = (stat_all(self.changed_at, [c[2] for c in candidates]) if exact
                   else [mtime for _, _, _, mtime in candidates])
        for (digest, size, path, _), changed in zip(candidates, changes, strict=True):
            if changed <= self.cutoff:
                items.append(Item("blob", "", digest, (layout.blob_dir(digest),), path, size))
        for name, repo in sorted(repos.items()):
            for digest, path in sorted(repo.layers.items()):
                if digest not in blobs and self.changed_at(path) <= self.cutoff:
                    items.append(Item("link", name, digest, (layout.layer_link_dir(name, digest),), path))
        return items

    def _manifest_item(self, name: str, digest: Digest, repo: Repository) -> Item:
        paths = [layout.revision_dir(name, digest)]
        parsed = self.parsed(digest)
        if parsed is not None and parsed.subject is not None:
            paths.append(layout.referrer_entry(name, parsed.subject.digest, digest))
        for tag in repo.tag_history.get(digest, ()):
            paths.append(layout.tag_index_dir(name, tag, digest))
        return Item("manifest", name, digest, tuple(paths), layout.revision_link(name, digest))

    def recheck(self, items: list[Item], repos: dict[str, Repository]) -> list[Item]:
        """Drop what became referenced while the mark ran."""
        kept = {name: self.kept(repo) for name, repo in repos.items()}
        marked = self.marked(repos, kept)
        still: list[Item] = []
        changed = dict(zip(items, stat_all(self.changed_at, [i.marker for i in items]), strict=True))
        for item in items:
            if item.kind == "manifest":
                repo = repos.get(item.repository)
                ok = repo is not None and item.digest in repo.revisions and item.digest not in kept[item.repository]
            elif item.kind == "blob":
                ok = item.digest not in marked and changed[item] <= self.cutoff
            else:
                ok = (changed[item] <= self.cutoff
                      and not self.driver.exists(layout.blob_data(item.digest)))
            if ok:
                still.append(item)
        return still

    def new_references(self, repo: Repository | None) -> set[Digest]:
        """What the repository's revisions written since the cutoff reference."""
        if repo is None:
            return set()
        return {ref for digest, path in repo.revisions.items() if self.changed_at(path) > self.cutoff
                for ref in self.references(digest)}


_CHUNK_MIN = 16


def _tags_directory(path: str) -> bool:
    """A repository's `_manifests/tags` (no repository name component starts with "_")."""
    return path.endswith("/_manifests/tags")


def _by_digest(candidate: tuple[Digest, int, str, float]) -> tuple[str, str]:
    """Sort key: the digest's strings (compared in C; Digest's own ordering runs Python per comparison)."""
    return candidate[0].algorithm, candidate[0].hex


def chunks(things: list[Any]) -> list[list[Any]]:
    """`things` cut into one run of consecutive items per thread task: a task per item cost more in futures
    and thread hand-offs than its syscalls (ThreadPoolExecutor.map ignores `chunksize`)."""
    size = max(_CHUNK_MIN, math.ceil(len(things) / (SWEEP_THREADS * 4)))
    return [things[i:i + size] for i in range(0, len(things), size)]


def stat_all(check: Callable[[Any], Any], things: list[Any]) -> list[Any]:
    """`check` (a few stats) of every one of `things`, overlapped in threads: a sweep of 30,000 blobs makes
    ~100,000 such calls, each mostly waiting on the filesystem."""
    if len(things) < 64:
        return [check(t) for t in things]
    with ThreadPoolExecutor(SWEEP_THREADS, thread_name_prefix="gc-stat") as pool:
        return [r for chunk in pool.map(lambda c: [check(t) for t in c], chunks(things)) for r in chunk]


_MENTIONED = re.compile(r"\b(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})\b")


def _any_digests(content: bytes) -> Iterable[Digest]:
    if jsonlimit.depth_exceeds(content):
        # Too deep for json.loads (RecursionError would stop the run; another registry may have written it into
        # a shared store): what it references cannot be read, so every digest written anywhere in it is kept.
        try:
            text = content.decode(json.detect_encoding(content), errors="replace")
        except LookupError:
            text = content.decode("latin-1")
        for match in _MENTIONED.finditer(text):
            yield Digest.parse(match.group())
        return
    try:
        document = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("digest", "blobSum") and isinstance(value, str):
                    try:
                        yield Digest.parse(value)
                    except RegistryError:
                        pass
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
