"""Background upkeep run inside the server: purging abandoned upload sessions, scheduled garbage collection."""

from __future__ import annotations

import asyncio
import logging
import random

from secreg.registry.browse import Browse
from secreg.registry.local import LocalRegistry
from secreg.storage.driver import StorageError

log = logging.getLogger("secreg.maintenance")


async def purge_uploads_forever(registry: LocalRegistry) -> None:
    settings = registry.settings
    # Jitter, so several workers (or replicas) sharing storage do not all walk it at the same moment.
    await asyncio.sleep(random.uniform(5, 60))
    while True:
        await purge_uploads_once(registry)
        await asyncio.sleep(settings.upload_purge_interval)


async def purge_uploads_once(registry: LocalRegistry) -> None:
    """One round of the upload purge. It never raises (the loop must go on): storage that fails (StorageError, an
    OSError of the filesystem) is one error line naming the failure, the next round retries; anything else, a
    bug, is logged with its traceback."""
    settings = registry.settings
    try:
        removed = await asyncio.to_thread(registry.uploads.purge_stale, settings.upload_purge_age)
        if removed:
            log.info("purged %d upload session(s) older than %d s", len(removed), settings.upload_purge_age)
        aborted = await asyncio.to_thread(registry.uploads.abort_stale_writes, settings.upload_purge_age)
        if aborted:
            log.info("aborted %d incomplete write(s) no upload session owned (%d bytes)", len(aborted),
                     sum(w.size for w in aborted))
    except (StorageError, OSError) as exc:
        log.error("upload purge failed, retried in %d s: %s", settings.upload_purge_interval, exc)
    except Exception:  # keep the loop alive
        log.exception("upload purge failed")


async def collect_garbage_forever(registry: LocalRegistry) -> None:
    """`gc.schedule`: the same collection `secreg gc` runs, safe while pushes go on. Several workers or
    replicas may schedule it; the storage lock lets one run at a time and the others skip that round."""
    from secreg.observability.metrics import record_gc, record_gc_failure
    from secreg.registry.gc import GcBusy, collect_garbage

    settings = registry.settings
    await asyncio.sleep(settings.gc_delay + random.uniform(0, 5))
    while True:
        try:
            report = await asyncio.to_thread(
                collect_garbage, registry.driver, grace=settings.gc_grace, delete_untagged=False, dry_run=False,
                upload_purge_age=settings.upload_purge_age,
            )
            record_gc(report)
            Browse(registry.driver).record_gc(report, "schedule")
            log.info("scheduled gc: removed %d blob(s), freed %d bytes",
                     len(report.blobs_removed), report.bytes_freed)
        except GcBusy:
            log.info("scheduled gc: another collection is running; skipped")
        except (StorageError, OSError) as exc:  # the storage failed: one line, the next round retries
            record_gc_failure()
            log.error("scheduled gc failed, retried in %d s: %s", settings.gc_interval, exc)
        except Exception:
            record_gc_failure()
            log.exception("scheduled gc failed")
        await asyncio.sleep(settings.gc_interval)
