"""Workload results: samples per side, per-pair ratios, the markdown table and the JSON document."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA = 1
SIDES = ("secreg", "go")


@dataclass(frozen=True)
class Target:
    """What the ratio (or, with `absolute`, secreg's own median) must reach."""

    op: str  # ">=" or "<="
    value: float
    absolute: bool = False  # compare secreg's median instead of the ratio

    def met(self, ratio: float | None, secreg_median: float | None) -> bool | None:
        value = secreg_median if self.absolute else ratio
        if value is None:
            return None
        return value >= self.value if self.op == ">=" else value <= self.value

    def describe(self, unit: str) -> str:
        return f"secreg {self.op} {self.value:g} {unit}" if self.absolute else f"ratio {self.op} {self.value:g}"


@dataclass
class Sample:
    value: float  # in the workload's unit
    seconds: float  # wall time of the measured operation
    extra: dict[str, Any] = field(default_factory=dict)  # client CPU, latency percentiles, peak RSS ...


@dataclass
class Workload:
    name: str
    title: str
    unit: str
    higher_is_better: bool
    target: Target | None = None
    status: str = "ok"  # "ok", "skipped: why" or "error: what"
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {side: [] for side in SIDES})
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0

    def add_pair(self, secreg: Sample, go: Sample) -> None:
        self.samples["secreg"].append(secreg)
        self.samples["go"].append(go)

    def ratios(self) -> list[float]:
        """secreg/Go for each pair of back-to-back runs."""
        return [s.value / g.value for s, g in zip(self.samples["secreg"], self.samples["go"], strict=True)
                if g.value > 0]

    def summary(self, side: str) -> dict[str, Any]:
        values = [s.value for s in self.samples[side]]
        if not values:
            return {"samples": [], "median": None, "min": None, "max": None}
        return {
            "samples": [{"value": s.value, "seconds": s.seconds, **s.extra} for s in self.samples[side]],
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
        }

    def to_json(self) -> dict[str, Any]:
        ratios = self.ratios()
        ratio_median = statistics.median(ratios) if ratios else None
        secreg = self.summary("secreg")
        return {
            "title": self.title,
            "unit": self.unit,
            "better": "higher" if self.higher_is_better else "lower",
            "status": self.status,
            "secreg": secreg,
            "go": self.summary("go"),
            "ratios": ratios,
            "ratio_median": ratio_median,
            "ratio_min": min(ratios) if ratios else None,
            "ratio_max": max(ratios) if ratios else None,
            "target": None if self.target is None else {
                "op": self.target.op, "value": self.target.value, "absolute": self.target.absolute,
                "text": self.target.describe(self.unit),
            },
            "target_met": None if self.target is None or self.status != "ok"
            else self.target.met(ratio_median, secreg["median"]),
            "notes": self.notes,
            "info": self.info,
            "elapsed_seconds": round(self.elapsed, 2),
        }


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _range(summary: dict[str, Any]) -> str:
    if summary["median"] is None:
        return "–"
    if summary["min"] == summary["max"]:
        return _fmt(summary["median"])
    return f"{_fmt(summary['median'])} ({_fmt(summary['min'])}–{_fmt(summary['max'])})"


def markdown_table(workloads: list[Workload]) -> str:
    lines = [
        "| workload | unit | secreg median (min–max) | Go median (min–max) | secreg/Go per pair: median (min–max) "
        "| target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for workload in workloads:
        data = workload.to_json()
        if workload.status != "ok":
            lines.append(f"| {workload.title} | {workload.unit} | {workload.status} | | | "
                         f"{data['target']['text'] if data['target'] else ''} | |")
            continue
        ratio = "–" if data["ratio_median"] is None else (
            f"{data['ratio_median']:.2f} ({data['ratio_min']:.2f}–{data['ratio_max']:.2f})"
        )
        met = {True: "yes", False: "**no**", None: ""}[data["target_met"]]
        target = data["target"]["text"] if data["target"] else ""
        lines.append(f"| {workload.title} | {workload.unit} | {_range(data['secreg'])} | {_range(data['go'])} "
                     f"| {ratio} | {target} | {met} |")
    return "\n".join(lines)


def markdown_notes(workloads: list[Workload]) -> str:
    """One bullet per workload: how it was measured, and what else was recorded (peak RSS, client ceiling)."""
    lines = []
    for workload in workloads:
        extras = []
        peaks = workload.info.get("peak_rss_mib")
        if peaks:
            extras.append("peak RSS " + ", ".join(f"{k} {v:g} MiB" for k, v in peaks.items()))
        cpu = {side: [s.extra["server_cpu_seconds"] for s in workload.samples[side] if "server_cpu_seconds" in s.extra]
               for side in SIDES}
        if all(cpu.values()):
            extras.append("server CPU per run (median) " + ", ".join(
                f"{side} {statistics.median(values):.2f} s" for side, values in cpu.items()))
        ceiling = workload.info.get("client_ceiling_mb_per_s")
        if ceiling:
            extras.append("client ceiling " + ", ".join(f"{k} {v}" for k, v in ceiling.items()) + " MB/s")
        text = "; ".join(workload.notes + extras)
        lines.append(f"- {workload.title}: {text} ({workload.elapsed:.0f} s)")
    return "\n".join(lines)


def _first_line(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0].strip() if text else None


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "memory_bytes": memory,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def versions(go_registry: str | None) -> dict[str, Any]:
    """Tool versions; `go_registry` is the comparison binary's `--version` line (see bench.servers)."""
    return {
        "secreg": _package_version("secreg"),
        "hypercorn": _package_version("hypercorn"),
        "starlette": _package_version("starlette"),
        "uvloop": _package_version("uvloop"),
        "go_registry": go_registry,
        "openssl": _first_line(["openssl", "version"]),
        "curl": _first_line(["curl", "--version"]),
        "wrk": _first_line(["wrk", "--version"]),
        "h2load": _first_line(["h2load", "--version"]),
        "docker": _first_line(["docker", "--version"]),
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".json.tmp")
    temp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(temp, path)
