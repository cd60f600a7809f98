"""Helpers the benchmarks share for the processes they start."""

from __future__ import annotations

import subprocess
import time

import httpx


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    """Poll `url` until it answers 200; RuntimeError when the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready in {timeout_s}s")
