"""Background upkeep run inside the server: purging abandoned upload sessions."""

from __future__ import annotations

import asyncio
import logging
import random

from secreg.registry.service import Registry

log = logging.getLogger("secreg.maintenance")


async def purge_uploads_forever(registry: Registry) -> None:
    settings = registry.settings
    # Jitter, so several workers (or replicas) sharing storage do not all walk it at the same moment.
    await asyncio.sleep(random.uniform(5, 60))
    while True:
        try:
            removed = await asyncio.to_thread(registry.uploads.purge_stale, settings.upload_purge_age)
            if removed:
                log.info("purged %d upload session(s) older than %d s", len(removed), settings.upload_purge_age)
        except Exception:  # keep the loop alive: a storage hiccup must not end upkeep for good
            log.exception("upload purge failed")
        await asyncio.sleep(settings.upload_purge_interval)
