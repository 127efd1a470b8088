"""End-to-end harness: a private Docker engine, the Go reference registry, skopeo and TLS trust.

Standard library only, no pytest, so it can drive any registry (the Go reference registry, secreg) from
tests, benchmarks or a REPL. Every helper cleans up what it starts.

This module is the one import path; the code lives in:

* `processes.py`: commands, processes stopped by PID, free ports, the HTTPS probe;
* `docker_engine.py`: the private dockerd, images built in it, docker's certs.d trust (why 127.0.0.1 is
  never verified by dockerd, and the private /etc/hosts that makes it verify, is explained there);
* `clients.py`: a private containerd and skopeo;
* `goregistry.py`: the Go reference registry.
"""

from __future__ import annotations

from .clients import Containerd, skopeo, skopeo_json, start_containerd
from .docker_engine import (
    CERTS_D,
    STRICT_NAME,
    DockerBinaries,
    DockerEngine,
    build_image,
    image_exists,
    image_id,
    push_digest,
    start_docker_engine,
    trust_ca,
)
from .goregistry import GO_REGISTRY_BIN, GoRegistry, deep_merge, start_go_registry
from .processes import (
    CommandError,
    HarnessError,
    HttpResponse,
    MiB,
    ci_mode,
    free_port,
    https_get,
    ipv6_loopback_available,
    run_command,
    timed,
)

__all__ = [
    "CERTS_D",
    "GO_REGISTRY_BIN",
    "CommandError",
    "Containerd",
    "DockerBinaries",
    "DockerEngine",
    "GoRegistry",
    "HarnessError",
    "HttpResponse",
    "MiB",
    "STRICT_NAME",
    "build_image",
    "ci_mode",
    "deep_merge",
    "free_port",
    "https_get",
    "image_exists",
    "image_id",
    "ipv6_loopback_available",
    "push_digest",
    "run_command",
    "skopeo",
    "skopeo_json",
    "start_containerd",
    "start_docker_engine",
    "start_go_registry",
    "timed",
    "trust_ca",
]
