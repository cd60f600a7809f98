"""Write a lake snapshot in docs/CONTRACTS.md's format from scikit-learn's digits (tests, bench, demos).

Splits are assigned like the lake does: a salted hash of the example id (70/15/15).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_digits

from services.preprocessing.digits import sklearn_digits_features

SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("label", pa.string()),
        ("features", pa.list_(pa.float32())),
        ("object_uri", pa.string()),
        ("sha256", pa.string()),
        ("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)


def _split_of(example_id: str, salt: str) -> str:
    # Like the lake: a salted hash of the example id assigns the split (70/15/15).
    h = int(hashlib.sha256(f"{salt}:{example_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if h < 0.70 else "validation" if h < 0.85 else "test"


def write_digits_snapshot(
    lake_root: Path, snapshot_id: str = "snap-digits", *, shuffle_labels: bool = False, limit: int | None = None
) -> Path:
    """A snapshot folder under lake_root/snapshots/<id>; returns the folder."""
    digits = load_digits()
    x = sklearn_digits_features(digits.images)
    y = digits.target.astype(int)
    if limit:
        x, y = x[:limit], y[:limit]
    if shuffle_labels:
        y = np.random.default_rng(7).permutation(y)
    salt = "s1"
    ids = [f"digits-{i:05d}" for i in range(len(y))]
    return write_snapshot(lake_root, snapshot_id, ids, [str(v) for v in y], x, [_split_of(e, salt) for e in ids], salt)


def write_snapshot(
    lake_root: Path,
    snapshot_id: str,
    example_ids: list[str],
    labels: list[str],
    features: np.ndarray,
    splits: list[str],
    salt: str,
) -> Path:
    """Rows with their splits already assigned → a snapshot folder in the lake's layout; returns it."""
    folder = lake_root / "snapshots" / snapshot_id
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    rows: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for eid, label, feat, split in zip(example_ids, labels, features, splits, strict=True):
        blob = np.asarray(feat, dtype=np.float32).tobytes()
        rows[split].append(
            {
                "example_id": eid,
                "label": label,
                "features": np.asarray(feat, dtype=np.float32).tolist(),
                "object_uri": f"file:///objects/{hashlib.sha256(blob).hexdigest()}",
                "sha256": hashlib.sha256(blob).hexdigest(),
                "updated_at": now,
            }
        )
    files = []
    for split, split_rows in rows.items():
        path = folder / f"{split}.parquet"
        pq.write_table(pa.Table.from_pylist(split_rows, schema=SCHEMA), path)
        files.append(
            {
                "split": split,
                "path": path.name,
                "rows": len(split_rows),
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        )
    label_counts: dict[str, int] = {}
    for split_rows in rows.values():
        for r in split_rows:
            label_counts[r["label"]] = label_counts.get(r["label"], 0) + 1
    manifest = {
        "snapshot_id": snapshot_id,
        "created_at": now.isoformat(),
        "code_version": "test",
        "filters": {},
        "split": {"train": 0.7, "validation": 0.15, "test": 0.15, "salt": salt},
        "files": files,
        "rows_per_split": {s: len(r) for s, r in rows.items()},
        "label_counts": label_counts,
        "feature_dim": int(np.asarray(features).shape[1]),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (folder / "profile.json").write_text(json.dumps({"snapshot_id": snapshot_id, "n": len(labels)}))
    return folder
