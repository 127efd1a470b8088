"""ASGI entry point for Hypercorn workers: rebuilds the settings the `secreg serve` parent resolved.

The parent passes its config file, flag overrides and role in `_SECREG_SERVE` (not `SECREG_*`, which would be
read as settings), so every spawned worker builds an identical app.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from secreg import connections, hypercorn_h2, hypercorn_tuning, memory, proxyprotocol, tlstransport
from secreg.app import Role, create_app
from secreg.cli.serve import SERVE_ENV
from secreg.config import load_settings
from secreg.observability.logconfig import configure_server_logging


def app_from_environment() -> Any:
    spec = json.loads(os.environ.get(SERVE_ENV) or "{}")
    settings = load_settings(spec.get("config"), spec.get("overrides"), base_dir=Path(spec.get("base_dir") or "."))
    role: Role = spec.get("role", "all")
    configure_server_logging(settings)  # each worker process sets up its own handlers
    memory.tune()  # before the threads that allocate start: see secreg/memory.py
    hypercorn_tuning.apply()
    connections.install(connections.Limits(settings.max_connections, settings.max_connections_per_client,
                                           settings.header_timeout, settings.trusted_proxies), settings.workers)
    tlstransport.install(settings.tls_transport == "socket")
    proxyprotocol.install(settings.proxy_protocol, settings.header_timeout)
    application = create_app(settings, role)
    hypercorn_h2.freeze_startup_objects()  # last: what was built so far lives as long as the worker
    return application


app = app_from_environment()
