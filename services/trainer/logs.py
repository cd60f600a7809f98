"""A job's log, as the runners read it: the last `tail` lines, at most `max_bytes`, optionally followed.

Both bounds hold on every path: a runner reads at most max_bytes + 1 bytes (the one extra byte says
whether there was more), and what is cut is said in-band by a marker line (and by the REST route's
X-Flywheel-Log-Truncated header when it is not followed).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAX_TAIL = 10_000
DEFAULT_TAIL = 1_000
MAX_LOG_BYTES = 8 << 20
DEFAULT_LOG_BYTES = 1 << 20
_BLOCK = 64 << 10
# Counting lines back from the end of a local log reads at most this much (a log of one endless line).
_MAX_SCAN = 256 << 20


@dataclass
class LogRequest:
    tail: int = DEFAULT_TAIL
    max_bytes: int = DEFAULT_LOG_BYTES
    follow: bool = False


@dataclass
class JobLog:
    """`source`: where it was read (a pod, a file); `chunks`: the bytes, bounded; `truncated` is set once
    `chunks` has cut the log at max_bytes (so it is known after `chunks` is consumed)."""

    source: str
    chunks: Iterator[bytes] = field(default_factory=lambda: iter(()))
    truncated: bool = False

    def read_all(self) -> bytes:
        return b"".join(self.chunks)


def truncated_marker(max_bytes: int) -> bytes:
    return (
        f"\n[flywheel: log truncated at {max_bytes} bytes (max_bytes); ask for fewer lines (tail) "
        f"or more bytes (max_bytes, at most {MAX_LOG_BYTES})]\n"
    ).encode()


def quiet_marker(timeout_s: float) -> bytes:
    return f"\n[flywheel: no output for {timeout_s:g} s; stream closed: follow again to continue]\n".encode()


def bounded(log: JobLog, chunks: Iterator[bytes], max_bytes: int) -> Iterator[bytes]:
    """`chunks` up to max_bytes, then the truncation marker (and `log.truncated`) if anything was left."""
    sent = 0
    for chunk in chunks:
        if sent + len(chunk) > max_bytes:
            if max_bytes > sent:
                yield chunk[: max_bytes - sent]
            log.truncated = True
            yield truncated_marker(max_bytes)
            return
        sent += len(chunk)
        if chunk:
            yield chunk


def tail_offset(path: Path, lines: int) -> int:
    """Where the last `lines` lines of the file start (scanning back at most _MAX_SCAN bytes)."""
    with path.open("rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        pos = end
        newlines = 0
        # A final newline ends the last line; it does not start another one.
        if end:
            fh.seek(end - 1)
            if fh.read(1) == b"\n":
                newlines = -1
        while pos > 0 and end - pos < _MAX_SCAN:
            step = min(_BLOCK, pos)
            pos -= step
            fh.seek(pos)
            block = fh.read(step)
            for i in range(len(block) - 1, -1, -1):
                if block[i] == 0x0A:
                    newlines += 1
                    if newlines == lines:
                        return pos + i + 1
        return pos


def file_chunks(
    path: Path,
    req: LogRequest,
    *,
    done: Callable[[], bool],
    stop: threading.Event,
    read_timeout_s: float,
    poll_s: float = 0.25,
) -> Iterator[bytes]:
    """The last req.tail lines of a file; with req.follow, then what is appended until `done()` (the job
    finished and nothing more came), `stop` is set, or nothing came for read_timeout_s."""
    start = tail_offset(path, req.tail)
    with path.open("rb") as fh:
        fh.seek(start)
        budget = req.max_bytes + 1
        quiet_since = time.monotonic()
        finishing = False
        while budget > 0:
            chunk = fh.read(min(_BLOCK, budget))
            if chunk:
                budget -= len(chunk)
                quiet_since = time.monotonic()
                yield chunk
                continue
            if not req.follow or finishing:
                return
            if done():
                finishing = True  # one more read: what the worker wrote before it finished
                continue
            if time.monotonic() - quiet_since >= read_timeout_s:
                yield quiet_marker(read_timeout_s)
                return
            if stop.wait(poll_s):
                return
