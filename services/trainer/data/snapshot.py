"""Read a lake snapshot (manifest + train/validation/test Parquet) into float32 arrays.

The snapshot folder is an fsspec URL (`file://…`, `s3://…`); files are checked against the
manifest's sha256 and row counts before use, so a torn or edited snapshot fails loudly.
`load_snapshot` gives each example's features (and where its stored original is);
data/inputs.py turns them into the project's model inputs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from services.projects.spec import ProjectSpec
from services.storage import s3
from services.trainer.errors import SnapshotInvalid, SnapshotNotFound

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # (n, …) float32: the features as loaded, the model inputs once prepared (data/inputs.py)
    y: np.ndarray  # (n,) int64 class indices into SnapshotData.labels
    features: np.ndarray | None = None  # (n, d) the snapshot's features (the monitored ones), once prepared
    object_uris: tuple[str, ...] = ()  # each example's stored original

    def __len__(self) -> int:
        return len(self.y)

    @property
    def flat(self) -> np.ndarray:
        return self.x.reshape(len(self.x), -1)


@dataclass(frozen=True)
class SnapshotData:
    snapshot_id: str
    uri: str
    labels: tuple[str, ...]
    train: Split
    validation: Split
    test: Split
    project: ProjectSpec | None = None  # set once the model inputs are prepared for the project

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.train.x.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.labels)


def snapshot_uri(lake_root: str, snapshot_id: str) -> str:
    return f"{lake_root.rstrip('/')}/snapshots/{snapshot_id}"


def _label_order(labels: set[str]) -> tuple[str, ...]:
    # Digits (and any integer labels) sort numerically, so class index == digit.
    if all(lbl.isdigit() for lbl in labels):
        return tuple(sorted(labels, key=int))
    return tuple(sorted(labels))


def load_snapshot(uri: str, labels: tuple[str, ...] | None = None) -> SnapshotData:
    """Load and verify a snapshot folder; `labels` fixes the class order (default: from data)."""
    fs, root = s3.url_to_fs(uri)
    manifest_path = f"{root.rstrip('/')}/manifest.json"
    if not fs.exists(manifest_path):
        raise SnapshotNotFound(f"no snapshot at {uri} (missing manifest.json)")
    with fs.open(manifest_path, "rb") as fh:
        manifest = json.loads(fh.read())
    files = {f["split"]: f for f in manifest.get("files", [])}
    missing = [s for s in SPLITS if s not in files]
    if missing:
        raise SnapshotInvalid(f"snapshot {uri} lists no file for split(s) {missing}")
    tables = {}
    for split in SPLITS:
        entry = files[split]
        path = f"{root.rstrip('/')}/{entry['path']}"
        with fs.open(path, "rb") as fh:
            blob = fh.read()
        digest = hashlib.sha256(blob).hexdigest()
        if entry.get("sha256") and digest != entry["sha256"]:
            raise SnapshotInvalid(f"{entry['path']}: sha256 {digest[:12]}… does not match the manifest")
        table = pq.read_table(pa.BufferReader(blob))
        if "rows" in entry and table.num_rows != int(entry["rows"]):
            raise SnapshotInvalid(f"{entry['path']}: {table.num_rows} rows, manifest says {entry['rows']}")
        for col in ("label", "features"):
            if col not in table.column_names:
                raise SnapshotInvalid(f"{entry['path']}: no column {col!r}")
        tables[split] = table
    if labels is None:
        seen: set[str] = set()
        for t in tables.values():
            seen.update(t.column("label").to_pylist())
        labels = _label_order(seen)
    index = {lbl: i for i, lbl in enumerate(labels)}
    dim = int(manifest.get("feature_dim", 0))
    splits = {}
    for split, table in tables.items():
        feats = table.column("features").to_pylist()
        x = np.asarray(feats, dtype=np.float32) if feats else np.zeros((0, dim), np.float32)
        if x.ndim != 2 or (dim and x.shape[1] != dim):
            raise SnapshotInvalid(f"{split}: features have shape {x.shape}, manifest feature_dim is {dim}")
        unknown = {lbl for lbl in table.column("label").to_pylist() if lbl not in index}
        if unknown:
            raise SnapshotInvalid(f"{split}: labels {sorted(unknown)} are not in {list(labels)}")
        y = np.asarray([index[lbl] for lbl in table.column("label").to_pylist()], dtype=np.int64)
        uris = table.column("object_uri").to_pylist() if "object_uri" in table.column_names else []
        splits[split] = Split(x, y, object_uris=tuple(str(u or "") for u in uris))
    if len(splits["train"]) == 0:
        raise SnapshotInvalid(f"snapshot {uri} has an empty train split")
    return SnapshotData(
        snapshot_id=str(manifest.get("snapshot_id", uri.rstrip("/").rsplit("/", 1)[-1])),
        uri=uri,
        labels=tuple(labels),
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
    )
