"""Metrics across Hypercorn workers: `secreg serve` calls `prepare(workers, shared)` before any worker starts.

prometheus_client picks its multiprocess mode when it is imported, from PROMETHEUS_MULTIPROC_DIR, so the
variable must be in the environment the workers inherit. With one worker nothing is set. An operator's own
PROMETHEUS_MULTIPROC_DIR is used as given (its stale *.db files removed, as prometheus_client requires);
otherwise the metrics go to `metrics/` in the workers' shared directory (`secreg.workers`), which is removed
when `secreg serve` exits. No prometheus_client import here: the serving parent must not load it before the
variable is set.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(workers: int, shared: Path | None) -> Path | None:
    """Set up the metrics directory for `workers` > 1 (`shared`: the workers' directory); None with one worker."""
    if workers <= 1 or shared is None:
        return None
    given = os.environ.get(ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
        return directory
    directory = shared / "metrics"
    directory.mkdir(mode=0o700)
    os.environ[ENV] = str(directory)
    return directory
