"""The server's background upkeep (`secreg.registry.maintenance`) when its storage fails: one error line per round
and the loop goes on, no traceback (a real filesystem store whose repositories directory cannot be listed)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from secreg.config import load_settings
from secreg.registry.local import LocalRegistry
from secreg.registry.maintenance import purge_uploads_once
from secreg.storage import layout


def _registry(root: Path) -> LocalRegistry:
    settings = load_settings(overrides={"storage": {"filesystem": {"rootdirectory": str(root)}}}, environ={},
                             base_dir=root)
    return LocalRegistry.from_settings(settings)


def test_an_upload_purge_on_failing_storage_is_one_error_line(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "data"
    registry = _registry(root)
    repositories = root / layout.REPOSITORIES
    repositories.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(repositories.name, repositories)  # a loop: listing it fails with ELOOP, as a broken disk would
    with caplog.at_level(logging.INFO, logger="secreg.maintenance"):
        asyncio.run(purge_uploads_once(registry))
        asyncio.run(purge_uploads_once(registry))  # and the next round again, the same way
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 2, caplog.text
    assert all("upload purge failed, retried in" in r.getMessage() and r.exc_info is None for r in failures)
    assert "Traceback" not in caplog.text
    os.unlink(repositories)  # storage back: the round goes through quietly
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="secreg.maintenance"):
        asyncio.run(purge_uploads_once(registry))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
