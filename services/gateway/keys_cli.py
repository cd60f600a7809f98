"""`flywheel keys create|list|revoke`: API keys for the gateway, in the shared SQL database.

The database is `FLYWHEEL_DATABASE_URL` (or the SQLite file under FLYWHEEL_HOME / `--home`), the
same one the gateway reads. `create` prints the key once; only its hash is stored.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from services.config import CommonSettings, ConfigError, load_settings
from services.gateway.keys import SCOPES, KeyStore
from services.gateway.tables import MIGRATIONS
from services.storage import Database, migrate


def _store(args: argparse.Namespace) -> KeyStore:
    overrides = {"home": Path(args.home)} if getattr(args, "home", None) else {}
    common = load_settings(CommonSettings, **overrides)
    url = args.database_url or common.resolved_database_url()
    migrate(url, [MIGRATIONS])
    return KeyStore(Database(url))


def cmd_create(args: argparse.Namespace) -> int:
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    try:
        key = _store(args).create(args.name, scopes, args.rate, args.burst)
    except (ValueError, ConfigError) as exc:
        print(f"flywheel keys create: {exc}", file=sys.stderr)
        return 2
    key_id = key.split("_")[1]
    if args.json:
        print(json.dumps({"key_id": key_id, "key": key, "scopes": scopes}))
    else:
        print(f"key id: {key_id}\nscopes: {','.join(scopes)}\nkey (shown once, store it now):\n{key}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = _store(args).list()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "key_id": k.key_id,
                        "name": k.name,
                        "scopes": sorted(k.scopes),
                        "rate_per_s": k.rate_per_s,
                        "burst": k.burst,
                        "revoked": k.revoked,
                    }
                    for k in rows
                ]
            )
        )
        return 0
    print(f"{'key id':<14} {'name':<20} {'scopes':<16} {'rate/s':>8} {'burst':>6}  state")
    for k in rows:
        rate = "" if k.rate_per_s is None else f"{k.rate_per_s:g}"
        burst = "" if k.burst is None else str(k.burst)
        state = "revoked" if k.revoked else "active"
        print(f"{k.key_id:<14} {k.name:<20} {','.join(sorted(k.scopes)):<16} {rate:>8} {burst:>6}  {state}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    if _store(args).revoke(args.key_id):
        print(f"revoked {args.key_id}")
        return 0
    print(f"no active key {args.key_id}", file=sys.stderr)
    return 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("keys", help="create, list and revoke the gateway's API keys")
    p.add_argument("--database-url", help="SQLAlchemy URL (default: FLYWHEEL_DATABASE_URL or the home SQLite)")
    sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    c = sub.add_parser("create", help="create a key and print it once")
    c.add_argument("--name", required=True, help="who or what the key is for")
    c.add_argument("--scopes", default="predict", help=f"comma-separated, from: {', '.join(SCOPES)}")
    c.add_argument("--rate", type=float, help="requests per second (default: the gateway's)")
    c.add_argument("--burst", type=int, help="bucket size (default: the gateway's)")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=cmd_create)

    ls = sub.add_parser("list", help="list keys (ids, scopes, limits; never secrets)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_list)

    r = sub.add_parser("revoke", help="revoke a key by its id")
    r.add_argument("key_id")
    r.set_defaults(func=cmd_revoke)
