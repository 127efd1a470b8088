"""Single flight of the small upstream exchanges (a manifest by tag or by digest, a tag list): one upstream
exchange per key and server, however many clients of however many worker processes ask at once.

In one process the callers of a key share one task, which finishes even when the client that started it goes
away. Across the workers that task first takes the key's claim (`secreg.proxy.claim`, in the staging directory
the blob fetches use): the holder asks the upstream, then appends one line `done <record>`, the outcome as
JSON (a result or an error the followers can rebuild, e.g. "unknown upstream"); the other workers poll for
that line and turn it into their own answer instead of asking. Before asking, a new holder looks again at what
is cached (`Flight.settled`): another worker's flight may have ended between the caller's look and the claim.
A holder that dies or fails without a shareable outcome leaves no line: a follower then claims and asks itself.

On S3 the staging directory is a local spool (`fetch.spool_directory`), so this holds across the workers of
one host; replicas on other hosts each ask once, as they each fetch a blob once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from secreg.proxy.claim import Claim

T = TypeVar("T")

FOLLOW_POLL = 0.01  # seconds between a follower's looks at the claim
_TAKEOVERS = 5  # a follower whose holders keep dying asks on its own after this many claims
_DONE = "done"


@dataclass(frozen=True)
class Flight(Generic[T]):
    """What a flight does and how its outcome travels to the other workers."""

    own: Callable[[], Awaitable[T]]  # ask the upstream (and cache what it answered)
    settled: Callable[[], Awaitable[T | None]]  # the answer from the cache, if a flight just put it there
    share: Callable[[T | Exception], str | None]  # the outcome as a one-line JSON record; None: not shareable
    follow: Callable[[str], Awaitable[T]]  # a record back into the answer (or the error it says)


class Flights:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    async def run(self, key: str, flight: Flight[T]) -> T:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.create_task(self._across(key, flight))
            self._tasks[key] = task
            task.add_done_callback(lambda _: self._tasks.pop(key, None))
        return cast(T, await asyncio.shield(task))

    async def _across(self, key: str, flight: Flight[T]) -> T:
        path = os.path.join(self.directory, claim_name(key))
        for _ in range(_TAKEOVERS):
            try:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
                claim = Claim.take(path)
            except OSError:  # no claim to be had (a read-only or full disk): this process asks on its own
                return await flight.own()
            if claim.owned:
                return await self._own(claim, flight)
            record = await self._follow(claim)
            if record is not None:
                return await flight.follow(record)
        return await flight.own()

    async def _own(self, claim: Claim, flight: Flight[T]) -> T:
        try:
            claim.restart()  # a dead holder's lines, if there are any
            outcome = await flight.settled()
            if outcome is None:
                outcome = await flight.own()
        except Exception as exc:
            _record(claim, flight.share(exc))
            raise
        else:
            _record(claim, flight.share(outcome))
            return outcome
        finally:
            claim.release()

    async def _follow(self, claim: Claim) -> str | None:
        """The holder's record; None when it went away without one."""
        try:
            while True:
                alive = claim.owner_alive()  # asked before reading: the lines read then are all it wrote
                record = claim.lines().get(_DONE)
                if record is not None:
                    return record
                if not alive:
                    return None
                await asyncio.sleep(FOLLOW_POLL)
        finally:
            claim.release()

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _record(claim: Claim, record: str | None) -> None:
    if record is not None:
        with contextlib.suppress(OSError):  # no line: the followers ask themselves
            claim.append_verbatim(_DONE, record)


def claim_name(key: str) -> str:
    return hashlib.sha256(f"flight\n{key}".encode()).hexdigest()[:40] + ".claim"
