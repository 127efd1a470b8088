"""Metrics across Hypercorn workers: `secreg serve` calls `prepare(workers)` before any worker starts.

prometheus_client picks its multiprocess mode when it is imported, from PROMETHEUS_MULTIPROC_DIR, so the
variable must be in the environment the workers inherit. With one worker nothing is set. An operator's own
PROMETHEUS_MULTIPROC_DIR is used as given (its stale *.db files removed, as prometheus_client requires);
otherwise a private directory is created and removed when `secreg serve` exits. No prometheus_client import
here: the serving parent must not load it before the variable is set.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(workers: int) -> Path | None:
    """Set up the shared metrics directory for `workers` > 1; returns it (None with one worker)."""
    if workers <= 1:
        return None
    given = os.environ.get(ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
        return directory
    directory = Path(tempfile.mkdtemp(prefix="secreg-metrics-"))
    os.environ[ENV] = str(directory)
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory
