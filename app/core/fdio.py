"""Whole reads and writes on a file descriptor (the access log, the import reader's pipe)."""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of it is out: a pipe write that a signal interrupts (a stopped
    and continued process, a profiler attaching) returns having written only part."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_exactly(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd``, or fewer only at the end of the stream."""
    chunks = []
    while size > 0:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
