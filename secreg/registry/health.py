"""Readiness of the storage: can this process write, read back and delete a small file right now?"""

from __future__ import annotations

import os
import secrets

from secreg.storage import layout
from secreg.storage.driver import PathNotFound, StorageDriver, StorageError

# Beside blobs/ and repositories/ (so never a repository), in the tree every registry write goes to.
PROBE_DIR = layout.PROBE_DIR


def probe_storage(driver: StorageDriver) -> None:
    """Write, read and delete `_readyz/<pid>-<random>`; raises OSError or StorageError saying what failed."""
    path = layout.probe_file(f"{os.getpid()}-{secrets.token_hex(6)}")
    data = secrets.token_bytes(32)
    driver.write_bytes(path, data)
    try:
        if driver.read_bytes(path) != data:
            raise StorageError("the probe file read back different bytes")
    finally:
        try:
            driver.delete(path)
        except PathNotFound:
            raise StorageError("the probe file vanished before it was deleted") from None
