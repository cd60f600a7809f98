"""`flywheel snapshot create|list|show|diff|copy`: talk to a running lake over gRPC
(`--lake-addr`, env FLYWHEEL_LAKE_ADDR) or, without one, read and write the lake root directly
(`--root`, env FLYWHEEL_LAKE_ROOT, default file://$FLYWHEEL_HOME/lake)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from services.genproto.flywheel.v1 import lake_pb2 as pb
from services.genproto.flywheel.v1 import lake_pb2_grpc as pb_grpc
from services.lake.aggregates import Aggregates, LabelFilter
from services.lake.errors import LakeError
from services.lake.manifest import Manifest
from services.lake.snapshots import SNAPSHOTS, Snapshots, SplitSpec
from services.lake.store import LakeStore
from services.transportkit.auth import authenticated_channel


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("snapshot", help="create, list, show, diff and copy dataset snapshots")
    p.add_argument("--lake-addr", default=os.environ.get("FLYWHEEL_LAKE_ADDR"), help="lake gRPC host:port")
    p.add_argument("--root", default=os.environ.get("FLYWHEEL_LAKE_ROOT"), help="lake root URL (no server)")
    sub = p.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
    c = sub.add_parser("create", help="cut a snapshot of the latest labels")
    c.add_argument("--labels", default="", help="only these labels, comma-separated")
    c.add_argument("--sources", default="", help="only these sources, comma-separated")
    c.add_argument("--as-of", help="labels as they were at this ISO time (with zone)")
    c.add_argument("--train", type=float, default=0.8)
    c.add_argument("--validation", type=float, default=0.1)
    c.add_argument("--test", type=float, default=0.1)
    c.add_argument("--salt", default="flywheel", help="seeds the split hash")
    c.add_argument("--description", default="")
    sub.add_parser("list", help="list snapshots")
    s = sub.add_parser("show", help="a snapshot's manifest")
    s.add_argument("snapshot_id")
    d = sub.add_parser("diff", help="examples added, removed, relabelled between two snapshots")
    d.add_argument("base")
    d.add_argument("other")
    cp = sub.add_parser("copy", help="copy a snapshot into a local folder (sha256-checked)")
    cp.add_argument("snapshot_id")
    cp.add_argument("dest", type=Path)
    p.set_defaults(func=run)


def _split_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def run(args: argparse.Namespace) -> int:
    try:
        if args.lake_addr:
            return _remote(args)
        return _local(args)
    except LakeError as exc:
        print(f"flywheel snapshot: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        print(f"flywheel snapshot: {exc.code().name}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        return 1
    except ValueError as exc:
        print(f"flywheel snapshot: {exc}", file=sys.stderr)
        return 2


def _as_of(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError("--as-of needs a time zone, e.g. 2026-01-01T00:00:00Z")
    return when


def _local(args: argparse.Namespace) -> int:
    home = Path(os.environ.get("FLYWHEEL_HOME", ".flywheel"))
    store = LakeStore(args.root or f"file://{(home / 'lake').resolve()}")
    aggregates = Aggregates(store, lambda: Manifest.load(store), threading.RLock())
    snaps = Snapshots(store, aggregates, os.environ.get("FLYWHEEL_LAKE_CODE_VERSION", ""))
    cmd = args.snapshot_command
    if cmd == "create":
        flt = LabelFilter(
            tuple(sorted(set(_split_list(args.labels)))),
            tuple(sorted(set(_split_list(args.sources)))),
            _as_of(args.as_of),
        )
        m = snaps.create(flt, SplitSpec(args.train, args.validation, args.test, args.salt), args.description)
        _print({**m, "uri": snaps.uri(m["snapshot_id"])})
    elif cmd == "list":
        _table([{**m, "uri": snaps.uri(m["snapshot_id"])} for m in snaps.list()])
    elif cmd == "show":
        _print({**snaps.get(args.snapshot_id), "uri": snaps.uri(args.snapshot_id)})
    elif cmd == "diff":
        _print(snaps.diff(args.base, args.other))
    elif cmd == "copy":
        print(snaps.copy(args.snapshot_id, args.dest))
    return 0


def _remote(args: argparse.Namespace) -> int:
    with grpc.insecure_channel(args.lake_addr) as channel:
        # The lake admits trusted callers only: this command calls as FLYWHEEL_SERVICE_TOKEN (`flywheel`
        # sets it to the operator's token of the stack under --home when it is not set).
        stub = pb_grpc.LakeStub(authenticated_channel(channel, os.environ.get("FLYWHEEL_SERVICE_TOKEN", "")))
        cmd = args.snapshot_command
        if cmd == "create":
            req = pb.CreateSnapshotRequest(
                labels=_split_list(args.labels),
                sources=_split_list(args.sources),
                split=pb.SplitSpec(train=args.train, validation=args.validation, test=args.test, salt=args.salt),
                description=args.description,
            )
            when = _as_of(args.as_of)
            if when is not None:
                ts = Timestamp()
                ts.FromDatetime(when.astimezone(dt.UTC).replace(tzinfo=None))
                req.as_of.CopyFrom(ts)
            _print(MessageToDict(stub.CreateSnapshot(req, timeout=300), preserving_proto_field_name=True))
        elif cmd == "list":
            found = stub.ListSnapshots(pb.ListSnapshotsRequest(), timeout=60).snapshots
            _table([MessageToDict(s, preserving_proto_field_name=True) for s in found])
        elif cmd == "show":
            snap = stub.GetSnapshot(pb.GetSnapshotRequest(snapshot_id=args.snapshot_id), timeout=60)
            _print(MessageToDict(snap, preserving_proto_field_name=True))
        elif cmd == "diff":
            diff = stub.DiffSnapshots(pb.DiffSnapshotsRequest(base=args.base, other=args.other), timeout=300)
            _print(MessageToDict(diff, preserving_proto_field_name=True))
        elif cmd == "copy":
            snap = stub.GetSnapshot(pb.GetSnapshotRequest(snapshot_id=args.snapshot_id), timeout=60)
            root = snap.uri.removesuffix(f"/{SNAPSHOTS}/{snap.snapshot_id}")
            print(Snapshots(LakeStore(root), None).copy(args.snapshot_id, args.dest))
    return 0


def _table(snapshots: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="snapshots")
    for col in ("snapshot_id", "created_at", "rows_per_split", "labels", "code_version", "description"):
        table.add_column(col)
    for s in snapshots:
        rows = s.get("rows_per_split", {})
        table.add_row(
            s["snapshot_id"],
            str(s.get("created_at", "")),
            " ".join(f"{k}={rows[k]}" for k in ("train", "validation", "test") if k in rows),
            str(len(s.get("label_counts", {}))),
            s.get("code_version", ""),
            s.get("description", ""),
        )
    Console(width=200).print(table)
