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

import time
import uuid
from dataclasses import dataclass
from typing import Any

from secreg.digest import Digest
from secreg.registry.gc.mark import SWEEP_THREADS, Progress
from secreg.registry.gc.quarantine import GcBusy, Run, lock, recover
from secreg.registry.gc.uploads import AbortedWrite, PurgedUpload, purge_uploads
from secreg.storage import layout
from secreg.storage.driver import StorageDriver

__all__ = ["CLOCK_SLACK", "GC_DIR", "GC_LOCK", "SETTLE_SECONDS", "SWEEP_THREADS", "GcBusy", "GcReport", "Progress",
           "PurgedUpload", "RemovedBlob", "RemovedLink", "RemovedManifest", "collect_garbage"]

SETTLE_SECONDS = 2.0
# File timestamps come from a coarse kernel clock that may lag time.time() by a tick: never cut that fine.
CLOCK_SLACK = 1.0

# GC's own corner of the tree, beside blobs/ and repositories/ (which the reference registry alone reads).
GC_DIR = layout.GC_DIR
GC_LOCK = layout.GC_LOCK


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
    writes_aborted: tuple[AbortedWrite, ...] = ()  # incomplete multipart uploads no session owned

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
            "incomplete_writes_aborted": [{"path": w.path, "idle": round(w.idle, 1), "size": w.size}
                                          for w in self.writes_aborted],
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
    held = None if dry_run else lock(driver)
    try:
        if not dry_run:
            recover(driver)
        run = Run(driver, cutoff, delete_untagged, layout.gc_run_dir(uuid.uuid4().hex), progress)
        first = run.scan()
        # The sessions the scan found (a walk of repositories/ less): the scan began after `now`, so a
        # session it missed began after `now` too, and is not idle.
        purged, aborted = (purge_uploads(driver, upload_purge_age, now, dry_run, run.sessions)
                           if upload_purge_age is not None else ([], []))
        stored = run.scan_blobs()
        if progress is not None:
            progress("scan", len(stored), len(stored), sum(size for size, _, _ in stored.values()))
        plan = run.plan(first, stored, exact=dry_run)
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
                recover(driver)
                raise
            rescued = len(quarantined) - len(removed)
    finally:
        if held is not None:
            held.close()
    blobs = tuple(RemovedBlob(i.digest, i.size) for i in removed if i.kind == "blob")
    return GcReport(
        blobs_removed=blobs,
        bytes_freed=sum(b.size for b in blobs),
        manifests_removed=tuple(RemovedManifest(i.repository, i.digest) for i in removed if i.kind == "manifest"),
        uploads_purged=tuple(purged),
        writes_aborted=tuple(aborted),
        links_removed=tuple(RemovedLink(i.repository, i.digest) for i in removed if i.kind == "link"),
        duration=time.monotonic() - started,
        dry_run=dry_run,
        rescued=rescued,
    )
