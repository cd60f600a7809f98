"""The monitor's edges without a broker: --help, a bad setting, references that are missing or
found through the model repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from services.monitor.reference import ReferenceStore, SnapshotMap, profile_url
from tests.monitor.conftest import SNAPSHOT


def test_help_lists_the_environment() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "services.monitor", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    for var in ("FLYWHEEL_MONITOR_WINDOW_SIZE", "FLYWHEEL_MONITOR_LAKE_ROOT", "FLYWHEEL_MONITOR_TRAIN_COOLDOWN_S"):
        assert var in out.stdout


def test_a_bad_setting_stops_start_up_naming_the_variable() -> None:
    env = {**os.environ, "FLYWHEEL_MONITOR_CORRECTION": "holm", "FLYWHEEL_MONITOR_WINDOW_SIZE": "3"}
    out = subprocess.run(
        [sys.executable, "-m", "services.monitor"], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode != 0
    assert "FLYWHEEL_MONITOR_CORRECTION" in out.stderr and "FLYWHEEL_MONITOR_WINDOW_SIZE" in out.stderr


def test_reference_store_reads_the_lake_layout_and_survives_a_missing_profile(lake: Path) -> None:
    now = [0.0]
    store = ReferenceStore(f"file://{lake}", retry_s=10, clock=lambda: now[0])
    assert profile_url(f"file://{lake}", SNAPSHOT).endswith(f"snapshots/{SNAPSHOT}/profile.json")
    ref = store.get(SNAPSHOT)
    assert ref is not None and ref.snapshot_id == SNAPSHOT and ref.feature_dim == 64 and len(ref.derived) == 9
    assert store.get("no-such-snapshot") is None
    assert "FileNotFoundError" in (store.last_error("no-such-snapshot") or "")


def test_snapshot_map_falls_back_to_the_model_repository(tmp_path: Path) -> None:
    version = tmp_path / "digits" / "7"
    version.mkdir(parents=True)
    (version / "flywheel.json").write_text(json.dumps({"snapshot_id": "snap-7", "preprocess": "digits_8x8"}))
    snapshots = SnapshotMap(str(tmp_path))
    assert snapshots.snapshot_of("digits", "7") == "snap-7"
    assert snapshots.snapshot_of("digits", "8") is None
    snapshots.published("digits", "8", "snap-8")
    assert snapshots.snapshot_of("digits", "8") == "snap-8"
