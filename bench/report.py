"""What every benchmark's JSON result carries: when, on what machine; and how it is written."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def stamp() -> dict[str, Any]:
    """`time` and `machine` (CPUs, load average when the run ended, Python, platform)."""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": os.getloadavg()[0],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
