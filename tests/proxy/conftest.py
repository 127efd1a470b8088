"""Module-scoped real upstreams (fixtures.py, upstreams.py); a missing docker-registry binary skips, or fails in CI."""

from __future__ import annotations

from tests.e2e.conftest import go_registry_bin

from .fixtures import go_hub, go_pusher, token_pusher, token_upstream

__all__ = ["go_hub", "go_pusher", "go_registry_bin", "token_pusher", "token_upstream"]
