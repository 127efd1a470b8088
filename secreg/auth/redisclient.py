"""The one way secreg connects to Redis (`redis.addr`): short timeouts and a single quick retry, because every
caller is a request (a login, a refresh) that must not hang on an absent Redis."""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from secreg.config import RedisSettings

__all__ = ["redis_client"]


def redis_client(store: RedisSettings) -> Any:
    return redis.Redis(host=store.host, port=store.port, password=store.password or None, db=store.db,
                       socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 1))
