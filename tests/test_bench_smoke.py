"""`python -m bench --quick` runs from end to end and writes a result document of the expected shape.

No timing is asserted: this only proves the benchmark harness still works. Without the Go reference registry
the test skips, except in CI (environment variable CI set), where .ci/run installs it and a skip would hide a
broken setup. A workload whose optional tool is missing (wrk, curl, a docker engine) reports `skipped: ...`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.cli import ORDER
from tests.e2e.harness import GO_REGISTRY_BIN, ci_mode

ROOT = Path(__file__).resolve().parents[1]
# These need nothing but the two registries (blob_pull also needs curl).
BLOB_WORKLOADS = ("blob_push", "blob_push_chunked", "rss_blob_workloads", "rss_1gib_push")


def _go_registry_missing() -> bool:
    return shutil.which("docker-registry") is None and not os.access(GO_REGISTRY_BIN, os.X_OK)


def _check_side(name: str, side: dict[str, Any]) -> None:
    assert side["samples"], f"{name}: no samples"
    for sample in side["samples"]:
        assert isinstance(sample["value"], (int, float)) and sample["value"] > 0, (name, sample)
        assert isinstance(sample["seconds"], (int, float)) and sample["seconds"] >= 0, (name, sample)
    for key in ("median", "min", "max"):
        assert isinstance(side[key], (int, float)), (name, key, side[key])
    assert side["min"] <= side["median"] <= side["max"], (name, side)


def test_quick_benchmark_writes_a_complete_document(tmp_path: Path) -> None:
    if _go_registry_missing():
        reason = "docker-registry (the Go reference registry) is not installed"
        if ci_mode():
            pytest.fail(f"{reason} (CI is set: failing instead of skipping)", pytrace=False)
        pytest.skip(reason)
    output = tmp_path / "latest.json"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SECREG_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output), "--workdir", str(tmp_path / "work")],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=480, check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-6000:]}"

    document = json.loads(output.read_text())
    assert document["schema"] == 1
    assert document["settings"]["quick"] is True and document["settings"]["reps"] == 1
    machine = document["machine"]
    assert machine["nproc"] >= 1 and machine["memory_bytes"] > 0 and machine["kernel"] and machine["python"]
    assert document["versions"]["secreg"] and document["versions"]["go_registry"]
    assert "| workload |" in document["table"] and "| workload |" in done.stdout

    workloads = document["workloads"]
    assert list(workloads) == ORDER
    for name, workload in workloads.items():
        status = workload["status"]
        assert status == "ok" or status.startswith("skipped:"), f"{name}: {status}"
        assert workload["unit"] and workload["better"] in ("higher", "lower")
        if status != "ok":
            continue
        _check_side(name, workload["secreg"])
        _check_side(name, workload["go"])
        ratios = workload["ratios"]
        assert len(ratios) == len(workload["secreg"]["samples"]) == len(workload["go"]["samples"]), name
        assert all(isinstance(r, (int, float)) and r > 0 for r in ratios), name
        assert workload["ratio_min"] <= workload["ratio_median"] <= workload["ratio_max"], name
        if workload["target"] is not None:
            assert workload["target_met"] in (True, False), name
    for name in BLOB_WORKLOADS + (("blob_pull",) if shutil.which("curl") else ()):
        assert workloads[name]["status"] == "ok", f"{name}: {workloads[name]['status']}"
