"""Sweep: quarantine what the plan names, let in-flight requests settle, re-mark, then delete or put back.

The step that makes collection safe while pushes go on is here: an item is first renamed into `_gc/<run>/`
(atomic: from then on no request finds it, and a request writing it again makes a new file), and deleted only
when the final re-mark still finds nothing that references it and nobody wrote it anew. The argument why no
pushed image loses a blob is in the package docstring (`secreg.registry.gc`), beside the code that orders
these steps.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from secreg.registry.gc.mark import SWEEP_THREADS, Item, Marker, Progress, Repository, chunks, stat_all
from secreg.storage import layout
from secreg.storage.driver import AppendWriter, PathNotFound, StorageDriver, StorageError

log = logging.getLogger("secreg.gc")


class GcBusy(Exception):
    """Another garbage collection holds the lock on this storage."""


class Run(Marker):
    """A collection run: the marker's view plus the quarantine of `run_dir`."""

    def quarantine(self, items: list[Item]) -> list[Item]:
        # Each item on its own: renames of many items overlap in threads (a chunk of items per task).
        done = parallel(self._quarantine_one, items, self.progress, "quarantine")
        return [item for item, moved in zip(items, done, strict=True) if moved]

    def _quarantine_one(self, item: Item) -> bool:
        # No look before the rename: `recheck` has just judged the item, and the look after it below is what
        # catches a write in between (an upload of the same blob, a re-push).
        try:
            self._rename(item.paths[0], self.quarantined(item.paths[0]))
        except (StorageError, OSError):
            return False  # gone already (deleted through the API, say): nothing of ours to remove
        if self.changed_at(self.quarantined(item.marker)) > self.cutoff:
            # Written since recheck looked, before the rename: put it straight back, not after the settle.
            move_back(self.driver, self.quarantined(item.paths[0]), item.paths[0], item.marker)
            return False
        for path in item.paths[1:]:
            try:
                self._rename(path, self.quarantined(path))
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

    def finish(self, items: list[Item], repos: dict[str, Repository]) -> list[Item]:
        """The final re-mark: put back what is in use now, delete the rest. Returns what was deleted."""
        keep: set[Item] = set()
        # Revisions first: one put back keeps its manifest blob and what it references.
        for item in items:
            if item.kind == "manifest":
                repo = repos.setdefault(item.repository, Repository())
                repo.revisions.setdefault(item.digest, self.quarantined(item.marker))
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
        keep.update(item for item, renewed in zip(blobs, stat_all(self._renewed, blobs), strict=True) if renewed)
        for item in items:
            if item.kind == "link" and (
                self._renewed(item)
                or self.driver.exists(layout.blob_data(item.digest))
                or item.digest in self.new_references(repos.get(item.repository))
            ):
                keep.add(item)
        for item in items:
            if item in keep:
                self._restore(item)
        removed = [item for item in items if item not in keep]
        # What is left in the run directory is removed; all of it goes, in one walk of the tree (on an object
        # store: one listing and batched deletes, not several requests per item). On a local disk the blob
        # directories go first, two syscalls each, in threads (with `discard` on ext4 a serial unlink of
        # 30,000 files took 99 s here, threaded 1.4-6 s).
        if self.driver.local_path(self.run_dir) is not None:
            parallel(self._delete_quarantined, removed, self.progress, "delete")
        elif self.progress is not None:
            self.progress("delete", 0, len(removed), 0)
        try:
            self.driver.delete(self.run_dir)
        except PathNotFound:
            pass
        if self.progress is not None and removed and self.driver.local_path(self.run_dir) is None:
            self.progress("delete", len(removed), len(removed), sum(i.size for i in removed))
        return removed

    def _delete_quarantined(self, item: Item) -> bool:
        """Remove a deleted item's quarantined blob directory (local disk); the rest goes with the run dir."""
        for path in item.paths:
            quarantined = self.quarantined(path)
            local = self.driver.local_path(quarantined)
            data = self.driver.local_path(self.quarantined(layout.blob_data(item.digest)))
            if item.kind == "blob" and local is not None and data is not None:
                # A blob directory holds its data file only: two syscalls, not the driver's rename and tree walk
                # (nobody else looks inside _gc/).
                try:
                    os.unlink(data)
                    os.rmdir(local)
                    continue
                except OSError:
                    pass  # something else in there: it goes with the run directory
            break
        return True

    def _renewed(self, item: Item) -> bool:
        """Written anew while quarantined (a new file in place), or written just before the quarantine."""
        return self.driver.exists(item.marker) or self.changed_at(self.quarantined(item.marker)) > self.cutoff

    def _restore(self, item: Item) -> None:
        for path in reversed(item.paths[1:]):
            move_back(self.driver, self.quarantined(path), path, path)
        # The visible part last, and only if no request has put a new copy in place meanwhile.
        move_back(self.driver, self.quarantined(item.paths[0]), item.paths[0], item.marker)


def parallel(work: Callable[[Item], bool], items: list[Item], progress: Progress | None,
              phase: str) -> list[bool]:
    """`work` on every item in SWEEP_THREADS threads (each item's steps stay in order); results in order."""
    if not items:
        return []
    results: list[bool] = []
    total_bytes = sum(i.size for i in items)
    done_bytes = 0
    parts = chunks(items)
    with ThreadPoolExecutor(SWEEP_THREADS, thread_name_prefix=f"gc-{phase}") as pool:
        for part, done in zip(parts, pool.map(lambda c: [work(i) for i in c], parts), strict=True):
            results.extend(done)
            done_bytes += sum(i.size for i in part)
            if progress is not None:
                progress(phase, len(results), len(items), done_bytes if total_bytes else 0)
    return results


def move_back(driver: StorageDriver, source: str, destination: str, marker: str) -> None:
    if driver.exists(marker) or not driver.exists(source):
        return  # written anew meanwhile: the new copy (same digest, same bytes) stays
    try:
        driver.move(source, destination)
    except (StorageError, OSError):
        log.warning("gc: could not put %s back: it is being written anew", destination)


def lock(driver: StorageDriver) -> AppendWriter:
    writer = driver.open_append(layout.GC_LOCK)
    if not writer.try_lock():
        writer.close()
        raise GcBusy("another garbage collection is running on this storage")
    return writer


def recover(driver: StorageDriver) -> None:
    """Put back everything a crashed run left in quarantine; the next mark decides about it afresh."""
    try:
        runs = [entry for entry in driver.list(layout.GC_DIR) if entry != layout.GC_LOCK_NAME]
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
            move_back(driver, path, destination, destination)
        log.warning("gc: put back %d file(s) an interrupted run had quarantined", len(files))
        try:
            driver.delete(run_dir)
        except PathNotFound:
            pass
