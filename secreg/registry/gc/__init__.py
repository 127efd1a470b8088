"""Garbage collection that runs while the registry serves pushes; nothing stops the registry meanwhile.

Mark. The roots are every repository's `_layers` links and its manifest revisions. A kept revision keeps its
manifest blob and what it references: config and layers, or an index's child manifests. Without
`delete_untagged` every revision is kept; with it only the revisions a tag reaches (directly or through an
index), revisions written within the grace period, and referrers of kept revisions (their `subject` is kept),
recursively; the other revisions go with their `_referrers` entries and tag history, never with the
repository's `_layers` links. Links are roots because pushes rely on them: a manifest PUT accepts a layer only
when its repository links it, so a blob some repository links is never collected, however old. The layers of
a deleted manifest are freed once no repository links them (`DELETE /v2/<name>/blobs/<digest>`).

Sweep. A blob qualifies when it is unmarked and was last changed (mtime, or the ctime the rename of an upload
commit sets) more than `grace` seconds, plus one second for coarse file clocks, before the run began; a link
qualifies when its blob is missing and it is as old. Then:
  1. re-mark: scan the repositories again and drop whatever is referenced now;
  2. quarantine: rename each remaining item's directory into `_gc/<run>/` (the same tree below). The rename
     is atomic: from then on no request finds the item, and a request writing it again makes a new file;
     a copy that turns out to have been written just before the rename goes straight back;
  3. settle: wait two seconds, so a request that checked the item just before step 2 gets to write;
  4. final re-mark: scan again; put an item back when something references it now (a link, a kept
     revision, a revision written since the cutoff) or when a request wrote it anew (a new file in its
     place, or a recent ctime on the quarantined copy); delete the rest.
An interrupted run puts everything back; a crashed one leaves `_gc/<run>/`, which the next run moves back
first. Runs exclude each other with an advisory lock (`_gc/lock`) that the registry never takes.

Why no pushed image loses a blob. A manifest PUT succeeds only after it found, for each config and layer,
first the repository's link and then the data (`BlobStore.is_linked`); then it writes its revision link.
Suppose GC deleted such a blob: it quarantined it at Q, and the final re-mark at F >= Q + settle found no link
to it and no revision referencing it. The PUT found the data, so it looked before Q (afterwards the path is
empty, and data written there again is a new file that GC leaves alone), and it found the link earlier
still: the link existed before Q. Links disappear only through GC, which removes only links whose blob is
missing (this one was present), or through a client's explicit blob DELETE. Without that, the link is still
there at F and keeps the blob: a contradiction. With it, the PUT's revision, written right after its check,
is there at F and keeps the blob, unless the PUT stalled longer than the settle. A cross-repository mount
checks a link and the data, then links: the same argument. An upload commit renames fresh data into place,
then links it: either the quarantined copy is recent or the data in place is a new file. Timing alone
protects only references held by a revision and nothing else: an index whose untagged child
`delete_untagged` is removing, or a re-push of a manifest whose orphaned blob GC is removing (the PUT finds
the bytes present and does not write them again). There the request must not stall for longer than the
settle between its check and its write; and whatever is younger than the grace period is never a candidate.

On object storage (the S3 driver) a "rename" is a server-side copy and a delete, and the argument holds with
two substitutions. (1) Times: a copy carries its source's write time (`x-amz-meta-secreg-mtime`), so a
quarantined copy is judged by when the bytes were written, as a renamed file is; a new upload committed in
place is a new object with a fresh time. (2) Visibility: every step above reads what earlier steps wrote
(links, revisions, the quarantine). secreg assumes read-after-write consistency for objects and for listings
(AWS S3 since 2020; Swift while its container updates are not deferred). If a listing lags, a link written just
before a scan may be missed: the blob is then still younger than `grace`, which is why a store with listing lag
needs a grace period well above that lag; a quarantined item a late re-mark finds referenced is put back.
The lock is a `BucketLock` in the bucket (an entry plus a listing, no conditional writes), so two collectors
on different replicas exclude each other under the same assumption.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from secreg.digest import Digest
from secreg.errors import RegistryError
from secreg.registry.blobs import BlobStore
from secreg.registry.errors import ManifestInvalid
from secreg.registry.manifest_format import ParsedManifest, parse_manifest
from secreg.registry.uploads import UploadStore
from secreg.storage import layout
from secreg.storage.driver import AppendWriter, PathNotFound, StorageDriver, StorageError

log = logging.getLogger("secreg.gc")

SETTLE_SECONDS = 2.0
SWEEP_THREADS = 32  # renames and deletes wait on the disk, not the CPU: overlapping them is what makes a sweep fast
# progress(phase, done, total, bytes): phases "scan", "quarantine", "settle", "recheck", "delete", "uploads"
Progress = Callable[[str, int, int, int], None]
# File timestamps come from a coarse kernel clock that may lag time.time() by a tick: never cut that fine.
CLOCK_SLACK = 1.0

# GC's own corner of the tree, beside blobs/ and repositories/ (which the reference registry alone reads).
GC_DIR = layout.GC_DIR
GC_LOCK = layout.GC_LOCK


class GcBusy(Exception):
    """Another garbage collection holds the lock on this storage."""


@dataclass(frozen=True)
class RemovedBlob:
    digest: Digest
    size: int


@dataclass(frozen=True)
class RemovedManifest:
    repository: str
    digest: Digest


@dataclass(frozen=True)
class RemovedLink:
    repository: str
    digest: Digest


@dataclass(frozen=True)
class PurgedUpload:
    repository: str
    upload_id: str
    idle: float = 0.0  # seconds without data when removed
    size: int = 0


@dataclass(frozen=True)
class GcReport:
    """What a run removed (or, with `dry_run`, would remove)."""

    blobs_removed: tuple[RemovedBlob, ...]
    bytes_freed: int
    manifests_removed: tuple[RemovedManifest, ...]
    uploads_purged: tuple[PurgedUpload, ...]
    links_removed: tuple[RemovedLink, ...]
    duration: float
    dry_run: bool = False
    rescued: int = 0  # quarantined items the final re-mark found in use again and put back

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "blobs_removed": [{"digest": str(b.digest), "size": b.size} for b in self.blobs_removed],
            "bytes_freed": self.bytes_freed,
            "manifests_removed": [
                {"repository": m.repository, "digest": str(m.digest)} for m in self.manifests_removed
            ],
            "links_removed": [{"repository": k.repository, "digest": str(k.digest)} for k in self.links_removed],
            "uploads_purged": [{"repository": u.repository, "uuid": u.upload_id, "idle": round(u.idle, 1),
                                "size": u.size} for u in self.uploads_purged],
            "rescued": self.rescued,
            "duration": round(self.duration, 3),
        }


def collect_garbage(
    driver: StorageDriver,
    *,
    grace: float,
    delete_untagged: bool,
    dry_run: bool,
    now: float | None = None,
    upload_purge_age: float | None = None,
    settle: float = SETTLE_SECONDS,
    progress: Progress | None = None,
) -> GcReport:
    """Mark and sweep `driver`'s storage while it is in use (see the module docstring for why it is safe).
    `now` stands for the current time in age comparisons; `upload_purge_age` (seconds) also purges upload
    sessions started longer ago than that. Raises GcBusy when another run holds the lock."""
    started = time.monotonic()
    now = time.time() if now is None else now
    cutoff = now - grace - CLOCK_SLACK
    lock = None if dry_run else _lock(driver)
    try:
        if not dry_run:
            _recover(driver)
        purged = _purge_uploads(driver, upload_purge_age, now, dry_run) if upload_purge_age is not None else ()
        run = _Run(driver, cutoff, delete_untagged, layout.gc_run_dir(uuid.uuid4().hex), progress)
        first = run.scan()
        stored = run.scan_blobs()
        if progress is not None:
            progress("scan", len(stored), len(stored), sum(size for size, _ in stored.values()))
        plan = run.plan(first, stored)
        if dry_run:
            removed, rescued = plan, 0
        else:
            try:
                quarantined = run.quarantine(run.recheck(plan, run.scan()))
                if quarantined and settle > 0:
                    if progress is not None:
                        progress("settle", 0, len(quarantined), 0)
                    time.sleep(settle)
                removed = run.finish(quarantined, run.scan()) if quarantined else []
            except BaseException:  # interrupted (Ctrl-C in the settle, a storage error): undo, then fail
                _recover(driver)
                raise
            rescued = len(quarantined) - len(removed)
    finally:
        if lock is not None:
            lock.close()
    blobs = tuple(RemovedBlob(i.digest, i.size) for i in removed if i.kind == "blob")
    return GcReport(
        blobs_removed=blobs,
        bytes_freed=sum(b.size for b in blobs),
        manifests_removed=tuple(RemovedManifest(i.repository, i.digest) for i in removed if i.kind == "manifest"),
        uploads_purged=tuple(purged),
        links_removed=tuple(RemovedLink(i.repository, i.digest) for i in removed if i.kind == "link"),
        duration=time.monotonic() - started,
        dry_run=dry_run,
        rescued=rescued,
    )


# --- the run ---------------------------------------------------------------------------------------


@dataclass
class _Repository:
    layers: dict[Digest, str] = field(default_factory=dict)  # digest -> path of the link file
    revisions: dict[Digest, str] = field(default_factory=dict)  # digest -> path of the revision link
    tags: dict[str, Digest] = field(default_factory=dict)  # tag -> current target
    tag_history: dict[Digest, list[str]] = field(default_factory=dict)  # digest -> tags whose index lists it


@dataclass(frozen=True)
class _Item:
    """Something to remove. `paths` are moved into quarantine in order (the first decides visibility);
    `marker` is the file whose presence means the item is in place."""

    kind: str  # "blob" | "manifest" | "link"
    repository: str
    digest: Digest
    paths: tuple[str, ...]
    marker: str
    size: int = 0


class _Run:
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

    # --- reading the tree ---------------------------------------------------------------------------

    def scan(self) -> dict[str, _Repository]:
        """Links, revisions and tags of every repository, in one walk."""
        repos: dict[str, _Repository] = {}
        for info in self.driver.walk_files(layout.REPOSITORIES):
            found = layout.parse_repository_path(info.path)
            if found is None:
                continue
            repo = repos.setdefault(found.repository, _Repository())
            if found.kind == "layer" and found.digest is not None:
                repo.layers[found.digest] = info.path
            elif found.kind == "revision" and found.digest is not None:
                repo.revisions[found.digest] = info.path
            elif found.kind == "tag" and found.tag is not None:
                target = self._read_link(info.path)
                if target is not None:
                    repo.tags[found.tag] = target
            elif found.kind == "tag_index" and found.digest is not None and found.tag is not None:
                repo.tag_history.setdefault(found.digest, []).append(found.tag)
        return repos

    def scan_blobs(self) -> dict[Digest, tuple[int, str]]:
        """Every blob's size and data path."""
        found: dict[Digest, tuple[int, str]] = {}
        for info in self.driver.walk_files(layout.BLOBS):
            digest = layout.parse_blob_path(info.path)
            if digest is not None:
                found[digest] = (info.size, info.path)
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

    def _quarantined(self, path: str) -> str:
        return layout.quarantined(self.run_dir, path)

    # --- what manifests reference -------------------------------------------------------------------

    def _content(self, digest: Digest) -> bytes | None:
        for path in (layout.blob_data(digest), self._quarantined(layout.blob_data(digest))):
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

    def kept(self, repo: _Repository) -> set[Digest]:
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
            stack.extend(referrers.get(digest, ()))
        return kept

    def marked(self, repos: dict[str, _Repository], kept: dict[str, set[Digest]]) -> set[Digest]:
        marked: set[Digest] = set()
        for name, repo in repos.items():
            marked.update(repo.layers)
            for digest in kept[name]:
                marked.add(digest)
                marked.update(self.references(digest))
        return marked

    # --- deciding -----------------------------------------------------------------------------------

    def plan(self, repos: dict[str, _Repository], blobs: dict[Digest, tuple[int, str]]) -> list[_Item]:
        kept = {name: self.kept(repo) for name, repo in repos.items()}
        marked = self.marked(repos, kept)
        items: list[_Item] = []
        for name, repo in sorted(repos.items()):
            for digest in sorted(set(repo.revisions) - kept[name]):
                items.append(self._manifest_item(name, digest, repo))
        candidates = [(digest, size, path) for digest, (size, path) in sorted(blobs.items()) if digest not in marked]
        for (digest, size, path), changed in zip(candidates, _stat_all(self.changed_at, [c[2] for c in candidates]),
                                                 strict=True):
            if changed <= self.cutoff:
                items.append(_Item("blob", "", digest, (layout.blob_dir(digest),), path, size))
        for name, repo in sorted(repos.items()):
            for digest, path in sorted(repo.layers.items()):
                if digest not in blobs and self.changed_at(path) <= self.cutoff:
                    items.append(_Item("link", name, digest, (layout.layer_link_dir(name, digest),), path))
        return items

    def _manifest_item(self, name: str, digest: Digest, repo: _Repository) -> _Item:
        paths = [layout.revision_dir(name, digest)]
        parsed = self.parsed(digest)
        if parsed is not None and parsed.subject is not None:
            paths.append(layout.referrer_entry(name, parsed.subject.digest, digest))
        for tag in repo.tag_history.get(digest, ()):
            paths.append(layout.tag_index_dir(name, tag, digest))
        return _Item("manifest", name, digest, tuple(paths), layout.revision_link(name, digest))

    def recheck(self, items: list[_Item], repos: dict[str, _Repository]) -> list[_Item]:
        """Drop what became referenced while the mark ran."""
        kept = {name: self.kept(repo) for name, repo in repos.items()}
        marked = self.marked(repos, kept)
        still: list[_Item] = []
        changed = dict(zip(items, _stat_all(self.changed_at, [i.marker for i in items]), strict=True))
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

    def quarantine(self, items: list[_Item]) -> list[_Item]:
        # Each item on its own: renames (and the driver's directory fsyncs) of many items overlap in threads.
        done = _parallel(self._quarantine_one, items, self.progress, "quarantine")
        return [item for item, moved in zip(items, done, strict=True) if moved]

    def _quarantine_one(self, item: _Item) -> bool:
        if self.changed_at(item.marker) > self.cutoff:
            return False  # written again just now (an upload of the same blob, a re-push)
        try:
            self._rename(item.paths[0], self._quarantined(item.paths[0]))
        except (StorageError, OSError):
            return False  # gone already (deleted through the API, say): nothing of ours to remove
        if self.changed_at(self._quarantined(item.marker)) > self.cutoff:
            # Written between the look above and the rename: put it straight back, not after the settle.
            _move_back(self.driver, self._quarantined(item.paths[0]), item.paths[0], item.marker)
            return False
        for path in item.paths[1:]:
            try:
                self._rename(path, self._quarantined(path))
            except (StorageError, OSError):
                pass
        return True

    def _rename(self, source: str, destination: str) -> None:
        """A quarantine rename. On a local disk without the driver's directory fsync: a rename a crash loses
        leaves the item in place (kept), and one it keeps is in `_gc/`, which the next run puts back first; the
        deletes after the final re-mark follow the renames in the filesystem's journal either way."""
        src, dst = self.driver.local_path(source), self.driver.local_path(destination)
        if src is None or dst is None:
            self.driver.move(source, destination)
            return
        parent = os.path.dirname(dst)
        if parent not in self._parents:
            os.makedirs(parent, exist_ok=True)
            self._parents.add(parent)
        try:
            os.replace(src, dst)
        except FileNotFoundError:
            raise PathNotFound(source) from None

    def finish(self, items: list[_Item], repos: dict[str, _Repository]) -> list[_Item]:
        """The final re-mark: put back what is in use now, delete the rest. Returns what was deleted."""
        keep: set[_Item] = set()
        # Revisions first: one put back keeps its manifest blob and what it references.
        for item in items:
            if item.kind == "manifest":
                repo = repos.setdefault(item.repository, _Repository())
                repo.revisions.setdefault(item.digest, self._quarantined(item.marker))
        kept = {name: self.kept(repo) for name, repo in repos.items()}
        for item in items:
            if item.kind == "manifest" and (item.digest in kept[item.repository] or self._renewed(item)):
                keep.add(item)
            elif item.kind == "manifest":
                del repos[item.repository].revisions[item.digest]
                kept[item.repository].discard(item.digest)
        marked = self.marked(repos, kept)
        blobs = [item for item in items if item.kind == "blob" and item.digest not in marked]
        keep.update(item for item in items if item.kind == "blob" and item.digest in marked)
        keep.update(item for item, renewed in zip(blobs, _stat_all(self._renewed, blobs), strict=True) if renewed)
        for item in items:
            if item.kind == "link" and (
                self._renewed(item)
                or self.driver.exists(layout.blob_data(item.digest))
                or item.digest in self._new_references(repos.get(item.repository))
            ):
                keep.add(item)
        for item in items:
            if item in keep:
                self._restore(item)
        removed = [item for item in items if item not in keep]
        _parallel(self._delete_quarantined, removed, self.progress, "delete")
        try:
            self.driver.delete(self.run_dir)
        except PathNotFound:
            pass
        return removed

    def _delete_quarantined(self, item: _Item) -> bool:
        for path in item.paths:
            quarantined = self._quarantined(path)
            local = self.driver.local_path(quarantined)
            data = self.driver.local_path(self._quarantined(layout.blob_data(item.digest)))
            if item.kind == "blob" and local is not None and data is not None:
                # A blob directory holds its data file only: two syscalls, not the driver's rename and tree walk
                # (nobody else looks inside _gc/).
                try:
                    os.unlink(data)
                    os.rmdir(local)
                    continue
                except OSError:
                    pass  # something else in there: the general way
            try:
                self.driver.delete(quarantined)
            except PathNotFound:
                pass
        return True

    def _new_references(self, repo: _Repository | None) -> set[Digest]:
        """What the repository's revisions written since the cutoff reference."""
        if repo is None:
            return set()
        return {ref for digest, path in repo.revisions.items() if self.changed_at(path) > self.cutoff
                for ref in self.references(digest)}

    def _renewed(self, item: _Item) -> bool:
        """Written anew while quarantined (a new file in place), or written just before the quarantine."""
        return self.driver.exists(item.marker) or self.changed_at(self._quarantined(item.marker)) > self.cutoff

    def _restore(self, item: _Item) -> None:
        for path in reversed(item.paths[1:]):
            _move_back(self.driver, self._quarantined(path), path, path)
        # The visible part last, and only if no request has put a new copy in place meanwhile.
        _move_back(self.driver, self._quarantined(item.paths[0]), item.paths[0], item.marker)


def _stat_all(check: Callable[[Any], Any], things: list[Any]) -> list[Any]:
    """`check` (a few stats) of every one of `things`, overlapped in threads: a sweep of 30,000 blobs makes
    ~100,000 such calls, each mostly waiting on the filesystem."""
    if len(things) < 64:
        return [check(t) for t in things]
    with ThreadPoolExecutor(SWEEP_THREADS, thread_name_prefix="gc-stat") as pool:
        return list(pool.map(check, things, chunksize=64))


def _parallel(work: Callable[[_Item], bool], items: list[_Item], progress: Progress | None,
              phase: str) -> list[bool]:
    """`work` on every item in SWEEP_THREADS threads (each item's steps stay in order); results in order."""
    if not items:
        return []
    results: list[bool] = []
    total_bytes = sum(i.size for i in items)
    done_bytes = 0
    with ThreadPoolExecutor(SWEEP_THREADS, thread_name_prefix=f"gc-{phase}") as pool:
        for item, result in zip(items, pool.map(work, items), strict=True):
            results.append(result)
            done_bytes += item.size
            if progress is not None and (len(results) % 256 == 0 or len(results) == len(items)):
                progress(phase, len(results), len(items), done_bytes if total_bytes else 0)
    return results


def _move_back(driver: StorageDriver, source: str, destination: str, marker: str) -> None:
    if driver.exists(marker) or not driver.exists(source):
        return  # written anew meanwhile: the new copy (same digest, same bytes) stays
    try:
        driver.move(source, destination)
    except (StorageError, OSError):
        log.warning("gc: could not put %s back: it is being written anew", destination)


def _any_digests(content: bytes) -> Iterable[Digest]:
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


# --- lock, recovery, uploads -----------------------------------------------------------------------


def _lock(driver: StorageDriver) -> AppendWriter:
    writer = driver.open_append(GC_LOCK)
    if not writer.try_lock():
        writer.close()
        raise GcBusy("another garbage collection is running on this storage")
    return writer


def _recover(driver: StorageDriver) -> None:
    """Put back everything a crashed run left in quarantine; the next mark decides about it afresh."""
    try:
        runs = [entry for entry in driver.list(GC_DIR) if entry != layout.GC_LOCK_NAME]
    except PathNotFound:
        return
    for entry in runs:
        run_dir = layout.gc_run_dir(entry)
        files = sorted(
            (info.path for info in driver.walk_files(run_dir)),
            key=lambda p: (layout.is_revision_link(layout.unquarantined(run_dir, p)), p),
        )
        for path in files:
            destination = layout.unquarantined(run_dir, path)
            _move_back(driver, path, destination, destination)
        log.warning("gc: put back %d file(s) an interrupted run had quarantined", len(files))
        try:
            driver.delete(run_dir)
        except PathNotFound:
            pass


def _purge_uploads(driver: StorageDriver, max_age: float, now: float, dry_run: bool) -> list[PurgedUpload]:
    uploads = UploadStore(driver, BlobStore(driver))
    sessions = uploads.idle_sessions(max_age, now) if dry_run else uploads.purge_idle(max_age, now)
    return [PurgedUpload(s.repository, s.upload_id, s.idle, s.size) for s in sessions]
