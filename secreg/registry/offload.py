"""Where a storage call runs: on the event loop when the driver is local, in a bounded thread pool when not.

A metadata call on the filesystem driver (a stat, a small read of a link or a manifest) is a few microseconds
of page cache: handing it to a thread would cost more than the call (a future, a wake-up, two GIL exchanges)
and slow every manifest GET. The same call on an object store is a network round trip (a HEAD, a GET of a
state object) of milliseconds, seconds when the store is slow: on the loop it would stall every other request
of the process meanwhile. So the model asks an `Offload` to run its store calls: inline for a driver that
has local paths, else in a pool of its own (`THREADS` threads: enough for many requests in flight, few enough
that the threads — and glibc's per-thread malloc arenas — stay bounded).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from secreg.storage.driver import StorageDriver

__all__ = ["Offload"]

THREADS = 16

P = ParamSpec("P")
T = TypeVar("T")


class Offload:
    def __init__(self, driver: StorageDriver, threads: int = THREADS) -> None:
        self.inline = driver.local_path("") is not None
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A storage call that is cheap on a local driver: inline there, else in the pool."""
        if self.inline:
            return call(*args, **kwargs)
        return await self.thread(call, *args, **kwargs)

    async def thread(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A call that blocks on any driver (fsyncs, renames, object-store requests): always in the pool."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="secreg-storage")
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(call, *args, **kwargs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
