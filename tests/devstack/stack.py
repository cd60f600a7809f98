"""A `flywheel up` stack in a temporary home, and seeded label and prediction traffic against it.

Everything is real: the CLI in a subprocess, its supervisor daemon, the broker, every service and
Prometheus as processes on 127.0.0.1 with free ports; the gateway serves the test model
repository of tests/gateway (written into the home before `up`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from services.config import CommonSettings, load_settings
from services.devstack.credentials import StackCredentials
from services.devstack.supervisor import Component, probe, read_state
from services.gateway.keys import KeyStore
from services.lake.aggregates import Aggregates
from services.lake.errors import LakeUnavailable
from services.lake.manifest import Manifest
from services.lake.store import LakeStore
from services.storage import Database
from tests.gateway.models import MODEL, write_repository

LABEL_BATCH = 10
LABEL_EVERY_S = 0.1
PREDICT_EVERY_S = 0.02


def flywheel(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "COLUMNS": "200", "FLYWHEEL_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@dataclass
class Stack:
    home: Path
    api_key: str

    def components(self) -> dict[str, Component]:
        return {c.name: c for c in read_state(self.home)}

    def http(self, name: str) -> str:
        return f"http://{self.components()[name].roles()['http']}"

    def all_ready(self) -> bool:
        comps = self.components().values()
        return bool(comps) and all(c.state == "running" and probe(c) == "ready" for c in comps)

    def kill(self, name: str) -> int:
        """SIGKILL the component's process (a crash, an OOM kill): not its group, just the process."""
        pid = self.components()[name].pid
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_back(self, name: str, old_pid: int, timeout_s: float) -> float:
        """Seconds until the component runs again under a new pid and the whole stack is ready."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            comp = self.components().get(name)
            if comp is not None and comp.pid != old_pid and self.all_ready():
                return time.monotonic() - start
            time.sleep(0.1)
        states = {c.name: (c.state, c.last_exit, probe(c)) for c in self.components().values()}
        raise AssertionError(f"{name} not back within {timeout_s:.0f}s: {states}")

    def lake_labels(self, prefix: str) -> tuple[int, set[str]]:
        """(rows in the lake's files, distinct example ids) of labels whose example id starts with prefix.

        Read from outside the running lake: a compaction may replace files between reading the
        manifest and opening them, so a read that finds a file gone is tried again (fresh manifest)."""
        store = LakeStore(f"file://{(self.home / 'lake').resolve()}")
        agg = Aggregates(store, lambda: Manifest.load(store), threading.RLock())
        like = {"p": f"{prefix}%"}
        for attempt in range(10):
            try:
                with agg.connect() as (con, _):
                    rows = con.execute("SELECT count(*) FROM labels_all WHERE example_id LIKE $p", like).fetchall()[0][
                        0
                    ]
                    found = con.execute("SELECT example_id FROM labels WHERE example_id LIKE $p", like).fetchall()
                return int(rows), {r[0] for r in found}
            except LakeUnavailable:
                if attempt == 9:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")


def start_stack(home: Path, *up_args: str) -> Stack:
    home.mkdir(parents=True, exist_ok=True)
    write_repository(home / "models")
    up = flywheel(home, "up", "--free-ports", *up_args)
    if up.returncode != 0:
        flywheel(home, "down")
        raise AssertionError(f"flywheel up failed:\n{up.stdout}\n{up.stderr}")
    url = load_settings(CommonSettings, home=home).resolved_database_url()
    key = KeyStore(Database(url)).create("devstack-test", ["predict"], rate_per_s=10_000, burst=10_000)
    return Stack(home, key)


@dataclass
class Traffic:
    """Labels to ingest and predictions to the gateway, from two threads, until stopped."""

    stack: Stack
    run: str
    seed: int = 0
    accepted: list[str] = field(default_factory=list)
    # Refused (an error or no answer): ingest may still have stored them, so they may reach the lake.
    refused: list[str] = field(default_factory=list)
    predictions_ok: int = 0
    prediction_failures: list[float] = field(default_factory=list)  # monotonic times
    failure_reasons: Counter[str] = field(default_factory=Counter)  # status code or exception type
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Traffic:
        self._threads = [
            threading.Thread(target=self._labels, name="labels", daemon=True),
            threading.Thread(target=self._predictions, name="predictions", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _labels(self) -> None:
        rng = np.random.default_rng(self.seed)
        n = 0
        # ingest admits trusted callers only: the labeler's token, from the home's credentials
        labeler = StackCredentials.load(self.stack.home).bearer("labeler")
        with httpx.Client(timeout=10, headers=labeler) as client:
            while not self._stop.wait(LABEL_EVERY_S):
                ids = [f"{self.run}-{n + i}" for i in range(LABEL_BATCH)]
                n += LABEL_BATCH
                body = {
                    "labels": [
                        {
                            "example_id": example,
                            "label": str(int(rng.integers(10))),
                            "annotator": "devstack-test",
                            "features": rng.random(64).round(4).tolist(),
                        }
                        for example in ids
                    ]
                }
                try:
                    r = client.post(f"{self.stack.http('ingest')}/v1/labels", json=body)
                    ok = r.status_code in (200, 201, 202)
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.accepted.extend(ids)
                else:
                    self.refused.extend(ids)

    def _predictions(self) -> None:
        rng = np.random.default_rng(self.seed + 1)
        headers = {"Authorization": f"Bearer {self.stack.api_key}"}
        with httpx.Client(timeout=10) as client:
            while not self._stop.wait(PREDICT_EVERY_S):
                # First feature 0: the test repository's newest version fails on anything else.
                body = {"instances": [[0.0, *rng.random(63).round(4).tolist()]]}
                try:
                    url = f"{self.stack.http('gateway')}/v1/models/{MODEL}:predict"
                    r = client.post(url, json=body, headers=headers)
                    reason = "" if r.status_code == 200 else f"HTTP {r.status_code}"
                except (httpx.HTTPError, KeyError) as exc:
                    reason = type(exc).__name__
                if not reason:
                    self.predictions_ok += 1
                else:
                    self.prediction_failures.append(time.monotonic())
                    self.failure_reasons[reason] += 1
