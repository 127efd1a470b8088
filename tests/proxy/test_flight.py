"""`secreg.proxy.flight` in one process: callers of a key share one exchange; without a usable staging
directory each flight still gets its answer (asked without a claim)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from secreg.proxy.flight import Flight, Flights


def _flight(asked: list[int]) -> Flight[str]:
    async def own() -> str:
        asked.append(1)
        await asyncio.sleep(0.05)
        return "answer"

    async def settled() -> str | None:
        return None

    async def follow(record: str) -> str:
        return record

    return Flight(own, settled, lambda outcome: None, follow)


def test_callers_of_one_key_share_one_exchange(tmp_path: Path) -> None:
    asked: list[int] = []

    async def main() -> list[str]:
        flights = Flights(str(tmp_path / "staging"))
        return await asyncio.gather(*[flights.run("k", _flight(asked)) for _ in range(5)])

    assert asyncio.run(main()) == ["answer"] * 5 and len(asked) == 1
    assert list((tmp_path / "staging").iterdir()) == []  # the claim went with the flight


def test_no_staging_directory_still_answers(tmp_path: Path) -> None:
    blocked = tmp_path / "staging"
    blocked.write_text("a file where the directory should be")
    asked: list[int] = []

    async def main() -> str:
        return await Flights(str(blocked)).run("k", _flight(asked))

    assert asyncio.run(main()) == "answer" and len(asked) == 1
