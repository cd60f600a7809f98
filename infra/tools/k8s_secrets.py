"""Make k8s/base's Secret: every credential the chart would generate at install, random, written once to
k8s/base/secrets.env (mode 0600, ignored by git), which k8s/base's secretGenerator reads. Run it before the
first `kubectl apply -k k8s/...`; without the file kustomize refuses to build, so no deployment starts
with a published secret. Rotate: --rotate (a new set), apply again, restart the deployments.

.venv/bin/python infra/tools/k8s_secrets.py [--rotate] [--print KEY]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from services.devstack.credentials import StackCredentials  # noqa: E402  (the local runner's identities)
from services.devstack.stack import SERVICES  # noqa: E402  (and its who-calls-whom)

FILE = ROOT / "k8s" / "base" / "secrets.env"
# k8s/base is the chart rendered for release "flywheel": its bundled PostgreSQL's Service and database.
DATABASE = "postgresql+psycopg://flywheel:{password}@flywheel-flywheel-postgresql:5432/flywheel"


def generate() -> dict[str, str]:
    """The chart's Secret keys (charts/flywheel/templates/secrets.yaml), freshly made."""
    made = StackCredentials.generate()
    password = secrets.token_hex(24)
    values = {f"token-{identity}": token for identity, token in made.tokens.items()}
    values |= {
        "api-keys": made.gateway_key,
        "webhook-token": made.webhook_token,
        "database-password": password,
        "database-url": DATABASE.format(password=password),
    }
    values |= {f"trusted-callers-{spec.name}": made.trusted(*spec.callers) for spec in SERVICES}
    return values


def read(path: Path = FILE) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def write(values: dict[str, str], path: Path = FILE) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# Made by infra/tools/k8s_secrets.py: k8s/base's Secret. Keep it private; never commit it.\n")
        out.writelines(f"{key}={value}\n" for key, value in sorted(values.items()))
    tmp.replace(path)


def ensure(rotate: bool = False, path: Path = FILE) -> Path:
    """The file, made the first time (or again with rotate)."""
    if rotate or not path.exists():
        write(generate(), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rotate", action="store_true", help="make a new set even if the file exists")
    parser.add_argument("--print", metavar="KEY", help="print one value (e.g. api-keys, token-operator)")
    args = parser.parse_args()
    existed = FILE.exists()
    path = ensure(args.rotate)
    if args.print:
        values = read(path)
        if args.print not in values:
            parser.error(f"no key {args.print!r}; keys: {', '.join(sorted(values))}")
        print(values[args.print])
    else:
        print(f"{path.relative_to(ROOT)}: {'kept' if existed and not args.rotate else 'made'}")


if __name__ == "__main__":
    main()
