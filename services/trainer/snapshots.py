"""Resolve a snapshot id to its folder URL: under the lake root (shared storage) first, else ask the lake."""

from __future__ import annotations

from services.storage import s3
from services.trainer.data.snapshot import snapshot_uri
from services.trainer.errors import LakeUnavailable, SnapshotNotFound
from services.trainer.lake_client import LakeClient


class SnapshotResolver:
    def __init__(self, lake_root: str, lake: LakeClient | None) -> None:
        self._root = lake_root
        self._lake = lake

    def __call__(self, snapshot_id: str) -> str:
        if "/" in snapshot_id or snapshot_id in ("", ".", ".."):
            raise SnapshotNotFound(f"snapshot id {snapshot_id!r} is not a snapshot id")
        uri = snapshot_uri(self._root, snapshot_id)
        fs, path = s3.url_to_fs(uri)
        if fs.exists(f"{path}/manifest.json"):
            return uri
        if self._lake is not None:
            try:
                snap = self._lake.get_snapshot(snapshot_id)
            except LakeUnavailable:
                raise SnapshotNotFound(
                    f"no snapshot {snapshot_id!r} under {self._root}, and the lake is unreachable"
                ) from None
            if snap.uri:
                return snap.uri
        raise SnapshotNotFound(f"no snapshot {snapshot_id!r} under {self._root}")

    def fresh(self, reason: str, project: str) -> str:
        """Ask the lake to cut a new snapshot of a project's labels; returns its id."""
        if self._lake is None:
            raise LakeUnavailable("no lake address configured to cut a fresh snapshot")
        return self._lake.create_snapshot(description=reason, project=project).snapshot_id
