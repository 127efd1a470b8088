"""The connection counts workers share (secreg/conntable.py): exact per client and in total, whichever worker
holds a connection; entries leave the table when their last connection ends; a restarted worker's seat starts
at zero."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from secreg.conntable import SharedCounts, TableFull, capacity_for


def _tables(path: Path, workers: int = 2, capacity: int = 64) -> list[SharedCounts]:
    return [SharedCounts(path, workers, capacity, index) for index in range(workers)]


def test_counts_are_shared_between_seats(tmp_path: Path) -> None:
    a, b = _tables(tmp_path / "t")
    key = a.key("192.0.2.1")
    assert b.key("192.0.2.1") == key and a.key("192.0.2.2") != key  # one secret per file
    with a.locked():
        a.add(key)
        a.add(key)
    with b.locked():
        b.add(key)
        assert b.client(key) == [2, 1] and b.totals() == [2, 1]
    with a.locked():
        a.remove(key)
        a.remove(key)
        a.remove(key)  # more removals than additions never go below zero
        assert a.client(key) == [0, 1] and a.totals() == [0, 1]
    with b.locked():
        b.remove(key)
        assert b.client(key) == [0, 0] and b.totals() == [0, 0]
    assert not any(a._used(slot) for slot in range(a.capacity))  # the entry left with its last connection


def test_colliding_keys_survive_deletions_in_any_order(tmp_path: Path) -> None:
    (table,) = _tables(tmp_path / "t", workers=1, capacity=64)
    keys = [table.key(f"10.0.0.{i}") for i in range(30)]  # 30 in 64 slots: long probe runs
    with table.locked():
        for n, key in enumerate(keys):
            for _ in range(n % 3 + 1):
                table.add(key)
        for key in keys[::2]:
            while table.client(key)[0]:
                table.remove(key)
        for n, key in enumerate(keys):
            assert table.client(key) == [0 if n % 2 == 0 else n % 3 + 1]
        assert table.totals() == [sum(n % 3 + 1 for n in range(1, 30, 2))]


def test_a_full_table_refuses_instead_of_growing(tmp_path: Path) -> None:
    (table,) = _tables(tmp_path / "t", workers=1, capacity=64)
    with table.locked(), pytest.raises(TableFull):
        for i in range(65):  # one more than there are entries
            table.add(table.key(f"10.1.0.{i}"))
    assert capacity_for(4096) >= 2 * 4096


def test_a_restarted_seat_starts_at_zero(tmp_path: Path) -> None:
    a, b = _tables(tmp_path / "t")
    keys = [a.key(f"10.2.0.{i}") for i in range(20)]
    with a.locked():
        for key in keys:
            a.add(key)
    with b.locked():
        b.add(keys[0])
    b.close()
    again = SharedCounts(tmp_path / "t", 2, 64, 1)  # a new process in seat 1
    with again.locked():
        assert again.client(keys[0]) == [1, 0] and again.totals() == [20, 0]
    a.close()
    fresh = SharedCounts(tmp_path / "t", 2, 64, 0)  # and in seat 0: its 20 are gone, the entries too
    with fresh.locked():
        assert fresh.totals() == [0, 0] and not any(fresh._used(slot) for slot in range(64))
    with pytest.raises(ValueError):
        SharedCounts(tmp_path / "t", 3, 64, 0)  # another layout


def _add_many(path: str, index: int, key: bytes, times: int) -> None:
    table = SharedCounts(Path(path), 2, 64, index)
    for _ in range(times):
        with table.locked():
            table.add(key)
            table.remove(key)
            table.add(key)


def test_two_processes_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "t"
    (probe, _) = _tables(path)
    key = probe.key("198.51.100.7")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add_many, args=(str(path), index, key, 500)) for index in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    with probe.locked():
        assert probe.client(key) == [500, 500] and probe.totals() == [500, 500]
