"""A worker `secreg serve` spawned (`python -m secreg.cli.worker`, see secreg/supervisor.py): the settings the
server resolved (from its environment) and the listening sockets it opened (inherited descriptors)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def main() -> None:
    from hypercorn.config import Config, Sockets

    from secreg.cli.serve import SERVE_ENV, hypercorn_config
    from secreg.config import load_settings
    from secreg.supervisor import worker_function
    from secreg.workers import SOCKETS_ENV

    try:  # die with the server, even when it is killed without a chance to stop its workers
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the server's SIGTERM still reaches its process group
        pass
    spec = json.loads(os.environ.get(SERVE_ENV) or "{}")
    settings = load_settings(spec.get("config"), spec.get("overrides"), base_dir=Path(spec.get("base_dir") or "."))
    config = hypercorn_config(settings, Config())
    config.application_path = "secreg.asgi:app"
    descriptors = json.loads(os.environ[SOCKETS_ENV])
    sockets = Sockets(
        secure_sockets=[socket.socket(fileno=fd) for fd in descriptors["secure"]],
        insecure_sockets=[socket.socket(fileno=fd) for fd in descriptors["insecure"]],
        quic_sockets=[],
    )
    worker_function(config)(config=config, sockets=sockets)


if __name__ == "__main__":
    main()
