"""Ask the lake (gRPC `flywheel.v1.Lake`) for snapshots: a fresh one, or where an existing one lives."""

from __future__ import annotations

import grpc

from services.genproto.flywheel.v1 import lake_pb2, lake_pb2_grpc
from services.trainer.errors import LakeUnavailable, SnapshotInvalid, SnapshotNotFound
from services.transportkit.auth import authenticated_channel
from services.transportkit.bootstrap import Security


class LakeClient:
    def __init__(self, addr: str, security: Security, timeout_s: float = 120.0) -> None:
        """Calls the lake with the trainer's service token (and over TLS when `security` says so)."""
        self._addr = addr
        self._timeout = timeout_s
        self._channel = security.tls.channel(addr)
        self._stub = lake_pb2_grpc.LakeStub(authenticated_channel(self._channel, security.token))

    def create_snapshot(self, description: str = "", project: str = "") -> lake_pb2.Snapshot:
        try:
            return self._stub.CreateSnapshot(
                lake_pb2.CreateSnapshotRequest(description=description, project=project), timeout=self._timeout
            )
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT):
                # The lake answered: nothing to snapshot (no labels yet), or a request it cannot take.
                raise SnapshotInvalid(f"the lake cannot cut a snapshot: {exc.details()}") from None
            raise LakeUnavailable(
                f"lake at {self._addr}: CreateSnapshot failed: {exc.code().name}: {exc.details()}"
            ) from None

    def get_snapshot(self, snapshot_id: str) -> lake_pb2.Snapshot:
        try:
            return self._stub.GetSnapshot(lake_pb2.GetSnapshotRequest(snapshot_id=snapshot_id), timeout=self._timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise SnapshotNotFound(f"the lake has no snapshot {snapshot_id!r}") from None
            raise LakeUnavailable(f"lake at {self._addr}: GetSnapshot failed: {exc.code().name}") from None

    def close(self) -> None:
        self._channel.close()
