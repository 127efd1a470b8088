"""The S3 writer's part buffer: filled in place, one allocation reused part after part, sent without a copy."""

from __future__ import annotations

import subprocess
import sys

from secreg.storage.s3append import PartBuffer


def test_a_full_part_is_the_buffer_itself_and_the_next_part_reuses_it() -> None:
    buffer = PartBuffer(10)
    rest = buffer.fill(memoryview(b"abcdef"))
    assert not rest and len(buffer) == 6 and not buffer.full
    rest = buffer.fill(memoryview(b"ghijklm"))
    assert bytes(rest) == b"klm" and buffer.full
    first = buffer.body()
    assert first == b"abcdefghij" and isinstance(first, bytearray)
    buffer.clear()
    assert not buffer.fill(rest) and not buffer.fill(memoryview(b"1234567"))
    second = buffer.body()
    assert second is first and second == b"klm1234567"  # the same allocation, refilled


def test_a_partial_part_is_a_copy_of_what_it_holds_and_truncate_drops_the_end() -> None:
    buffer = PartBuffer(10, b"tail")
    buffer.fill(memoryview(b"-more"))
    buffer.truncate(6)
    assert buffer.body() == b"tail-m" and isinstance(buffer.body(), bytes)
    assert not buffer.fill(memoryview(b"XYZW")) and buffer.full and buffer.body() == b"tail-mXYZW"


def test_a_tail_larger_than_a_part_is_taken_from_the_front() -> None:
    buffer = PartBuffer(4, b"0123456789")
    assert buffer.take_front(4) == b"0123" and buffer.take_front(4) == b"4567"
    assert len(buffer) == 2 and buffer.body() == b"89"


def test_malloc_is_tuned_on_glibc() -> None:
    # In a child: the settings last for the process.
    out = subprocess.run([sys.executable, "-c", "from secreg import memory; print(memory.tune())"],
                         capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "True"
