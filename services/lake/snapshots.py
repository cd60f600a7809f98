"""Versioned dataset snapshots: stratified, deterministic splits; content-hashed, immutable.

Layout (docs/CONTRACTS.md): `snapshots/<id>/{train,validation,test}.parquet`, `profile.json`,
and `manifest.json`, written last, so a folder with a manifest is complete. The id is the hash
of the split files' bytes plus the code version, so the same data cut by the same code gives
the same id (and the existing snapshot is returned as it is: snapshots are never rewritten).

Splits are stratified: within each label, examples are ordered by sha256(salt, example_id) and
the first `train` share goes to train, the next `validation` share to validation, the rest to
test, so the assignment depends on the ids and the salt, never on arrival order.

A snapshot holds one project's labels: its spec (from the catalog the lake follows) names the
features' columns and kinds, so the profile tests a tabular column as a category or a number and
an image's pixels with their derived statistics.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.lake.aggregates import Aggregates, LabelFilter
from services.lake.errors import EmptySnapshot, InvalidRequest, SnapshotNotFound
from services.lake.store import LakeStore
from services.preprocessing import InputCodec
from services.profiles import build_profile
from services.projects.catalog import Catalog, Project, UnknownProject

SPLITS = ("train", "validation", "test")
SNAPSHOTS = "snapshots"
ID_RE = re.compile(r"^[0-9a-f]{8,64}$")
SCHEMA = pa.schema(
    [
        pa.field("example_id", pa.string()),
        pa.field("label", pa.string()),
        pa.field("features", pa.list_(pa.float32())),
        pa.field("object_uri", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
        pa.field("content_type", pa.string()),
    ]
)
# The modules whose code shapes a snapshot's bytes; their hash is the default code version.
_CODE = ("snapshots.py", "aggregates.py", "rows.py")


@dataclass(frozen=True)
class SplitSpec:
    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    salt: str = "flywheel"

    def validated(self) -> SplitSpec:
        shares = {"train": self.train, "validation": self.validation, "test": self.test}
        for name, share in shares.items():
            if not 0.0 <= share <= 1.0:
                raise InvalidRequest(f"split.{name} must be within [0, 1], got {share}")
        if self.train <= 0:
            raise InvalidRequest("split.train must be > 0: a snapshot needs a training split")
        if abs(sum(shares.values()) - 1.0) > 1e-6:
            raise InvalidRequest(f"split shares must sum to 1, got {sum(shares.values()):.6f}")
        return self


def code_version() -> str:
    digest = hashlib.sha256()
    for name in _CODE:
        digest.update((Path(__file__).parent / name).read_bytes())
    return f"lake-{digest.hexdigest()[:12]}"


def split_hash(salt: str, example_id: str) -> str:
    return hashlib.sha256(f"{salt}\0{example_id}".encode()).hexdigest()


def assign_splits(example_ids: list[str], labels: list[str], spec: SplitSpec) -> list[str]:
    """The split of each example: stratified by label, deterministic by hash of the id."""
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    out = [""] * len(example_ids)
    for members in by_label.values():
        members.sort(key=lambda i: split_hash(spec.salt, example_ids[i]))
        n = len(members)
        b1 = round(n * spec.train)
        b2 = round(n * (spec.train + spec.validation))
        for rank, i in enumerate(members):
            out[i] = "train" if rank < b1 else "validation" if rank < b2 else "test"
    return out


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=True)
    return buf.getvalue()


class Snapshots:
    def __init__(
        self,
        store: LakeStore,
        aggregates: Aggregates | None,
        version: str = "",
        catalog: Catalog | None = None,
        default_project: str = "",
    ) -> None:
        """Without a catalog (tools, tests) a snapshot takes every project's rows and numbers its columns."""
        self.store = store
        self.aggregates = aggregates
        self.code_version = version or code_version()
        self.catalog = catalog
        self.default_project = default_project

    def _project(self, flt: LabelFilter) -> tuple[LabelFilter, Project | None]:
        name = flt.project or self.default_project
        if self.catalog is None or not name:
            return flt, None
        try:
            project = self.catalog.get(name)
        except UnknownProject as exc:
            raise InvalidRequest(str(exc)) from None
        return dataclasses.replace(flt, project=name), project

    # -- create -----------------------------------------------------------------------------
    def create(self, flt: LabelFilter, spec: SplitSpec, description: str = "") -> dict[str, Any]:
        spec = spec.validated()
        if self.aggregates is None:
            raise InvalidRequest("this lake handle is read-only: it cannot create snapshots")
        flt, project = self._project(flt)
        table = self.aggregates.live_table(flt).cast(SCHEMA)
        lengths = pc.list_value_length(table.column("features"))
        table = table.filter(pc.greater(lengths, 0))
        if table.num_rows == 0:
            raise EmptySnapshot("no live labelled example with features matches the filters")
        dims = set(pc.list_value_length(table.column("features")).to_pylist())
        if len(dims) != 1:
            raise InvalidRequest(f"examples have different feature lengths {sorted(dims)}; filter to one schema")
        schema = InputCodec(project.spec.input).schema() if project is not None else None
        if schema is not None and len(schema.names) not in dims:
            raise InvalidRequest(
                f"project {project.name}'s examples have {sorted(dims)[0]} features; its spec names {len(schema.names)}"
            )
        ids = table.column("example_id").to_pylist()
        labels = table.column("label").to_pylist()
        split_of = np.array(assign_splits(ids, labels, spec))
        blobs: dict[str, bytes] = {}
        parts: dict[str, pa.Table] = {}
        for split in SPLITS:
            parts[split] = table.filter(pa.array(split_of == split))
            blobs[split] = _parquet(parts[split])
        if parts["train"].num_rows == 0:
            raise EmptySnapshot("the training split is empty: add examples or raise split.train")
        files = [
            {
                "split": s,
                "path": f"{s}.parquet",
                "rows": parts[s].num_rows,
                "sha256": hashlib.sha256(blobs[s]).hexdigest(),
            }
            for s in SPLITS
        ]
        ident = json.dumps({"code_version": self.code_version, "files": files, "project": flt.project}, sort_keys=True)
        snapshot_id = hashlib.sha256(ident.encode()).hexdigest()[:20]
        folder = f"{SNAPSHOTS}/{snapshot_id}"
        if self.store.exists(f"{folder}/manifest.json"):
            return self.get(snapshot_id)  # immutable: the same content is the same snapshot
        train = parts["train"]
        feats = np.asarray(train.column("features").combine_chunks().flatten().to_numpy(zero_copy_only=False))
        feats = feats.reshape(train.num_rows, -1)
        profile = build_profile(snapshot_id, feats, train.column("label").to_pylist(), schema)
        manifest = {
            "snapshot_id": snapshot_id,
            "created_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
            "code_version": self.code_version,
            "filters": {
                "labels": list(flt.labels),
                "sources": list(flt.sources),
                "as_of": flt.as_of.isoformat() if flt.as_of else None,
            },
            "project": flt.project,
            "project_version": project.version if project is not None else 0,
            "split": {"train": spec.train, "validation": spec.validation, "test": spec.test, "salt": spec.salt},
            "files": files,
            "rows_per_split": {f["split"]: f["rows"] for f in files},
            "label_counts": dict(sorted(Counter(labels).items())),
            "feature_dim": int(feats.shape[1]),
            "description": description,
        }
        for split in SPLITS:
            self.store.write_atomic(f"{folder}/{split}.parquet", blobs[split])
        self.store.write_atomic(f"{folder}/profile.json", json.dumps(profile).encode())
        self.store.write_atomic(f"{folder}/manifest.json", json.dumps(manifest, indent=2).encode())
        return manifest

    # -- read -------------------------------------------------------------------------------
    def get(self, snapshot_id: str) -> dict[str, Any]:
        if not ID_RE.match(snapshot_id or ""):
            raise InvalidRequest(f"snapshot_id must be a hex content hash, got {snapshot_id!r}")
        path = f"{SNAPSHOTS}/{snapshot_id}/manifest.json"
        try:
            return json.loads(self.store.read_bytes(path))
        except FileNotFoundError:
            raise SnapshotNotFound(f"no snapshot {snapshot_id!r} in {self.store.url}") from None

    def list(self) -> list[dict[str, Any]]:
        found = [json.loads(self.store.read_bytes(p)) for p in self.store.glob(f"{SNAPSHOTS}/*/manifest.json")]
        return sorted(found, key=lambda m: (m["created_at"], m["snapshot_id"]))

    def uri(self, snapshot_id: str) -> str:
        return self.store.url_of(f"{SNAPSHOTS}/{snapshot_id}")

    def _examples(self, snapshot_id: str) -> dict[str, tuple[str, str]]:
        """example_id → (label, split) of a snapshot."""
        manifest = self.get(snapshot_id)
        out: dict[str, tuple[str, str]] = {}
        for f in manifest["files"]:
            t = pq.read_table(io.BytesIO(self.store.read_bytes(f"{SNAPSHOTS}/{snapshot_id}/{f['path']}")))
            for eid, label in zip(t.column("example_id").to_pylist(), t.column("label").to_pylist(), strict=True):
                out[eid] = (label, f["split"])
        return out

    def diff(self, base: str, other: str) -> dict[str, Any]:
        a, b = self.get(base), self.get(other)
        ea, eb = self._examples(base), self._examples(other)
        added = sorted(set(eb) - set(ea))
        removed = sorted(set(ea) - set(eb))
        both = sorted(set(ea) & set(eb))
        relabelled = [(e, ea[e][0], eb[e][0]) for e in both if ea[e][0] != eb[e][0]]
        moved = sum(1 for e in both if ea[e][1] != eb[e][1])

        def delta(key: str) -> dict[str, int]:
            keys = sorted(set(a[key]) | set(b[key]))
            return {k: int(b[key].get(k, 0)) - int(a[key].get(k, 0)) for k in keys}

        return {
            "base": base,
            "other": other,
            "added": added,
            "removed": removed,
            "relabelled": [{"example_id": e, "before": x, "after": y} for e, x, y in relabelled],
            "moved_split": moved,
            "rows_per_split_delta": delta("rows_per_split"),
            "label_counts_delta": delta("label_counts"),
            "same_code_version": a["code_version"] == b["code_version"],
        }

    def copy(self, snapshot_id: str, dest: Path) -> Path:
        """Copy a snapshot into a local folder, checking every file's sha256; return the folder."""
        manifest = self.get(snapshot_id)
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        names = [f["path"] for f in manifest["files"]] + ["profile.json", "manifest.json"]
        expected = {f["path"]: f["sha256"] for f in manifest["files"]}
        for name in names:
            data = self.store.read_bytes(f"{SNAPSHOTS}/{snapshot_id}/{name}")
            if name in expected and hashlib.sha256(data).hexdigest() != expected[name]:
                raise InvalidRequest(f"snapshot {snapshot_id} file {name} does not match its sha256: corrupted")
            tmp = dest / f".tmp-{name}"
            tmp.write_bytes(data)
            tmp.replace(dest / name)
        return dest
