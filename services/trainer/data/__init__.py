"""Datasets the trainer reads: lake snapshots in docs/CONTRACTS.md's format."""

from services.trainer.data.snapshot import SnapshotData, Split, load_snapshot

__all__ = ["SnapshotData", "Split", "load_snapshot"]
