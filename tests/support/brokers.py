"""A Tansu broker on memory storage that a test can kill and start again as a new, empty one."""

from __future__ import annotations

import subprocess
from pathlib import Path

from services.devstack.brokers import tansu_command
from services.devstack.ports import port_open
from services.events import ensure_topics
from tests.support.waiting import wait_until


def start_tansu(port: int, cluster_id: str, log: Path) -> subprocess.Popen:
    """Tansu on 127.0.0.1:`port` with `cluster_id`, the flywheel topics created; killed, it keeps nothing."""
    proc = subprocess.Popen(
        tansu_command(port, cluster_id), stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
    )
    wait_until(lambda: port_open("127.0.0.1", port), 20, proc=proc, message="tansu")
    ensure_topics(f"127.0.0.1:{port}")
    return proc
