"""A real S3-compatible server for the tests: Versity S3 Gateway (`make s3-server` builds it into .tools/s3).

Started on 127.0.0.1 with a free port, random keys and its posix backend in a temporary folder; ready
once an authenticated ListBuckets answers. Skipped without the binary on a developer's machine, a
failure under CI=true (tests/support/required.py).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from services.devstack.ports import free_port
from services.storage.s3 import S3Settings, s3_filesystem
from tests.support.required import unavailable
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / ".tools" / "s3" / "versitygw"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    log: Path

    def settings(self, **overrides: str) -> S3Settings:
        fields = {"access_key_id": self.access_key, "secret_access_key": self.secret_key}
        return S3Settings(**{**fields, "endpoint_url": self.endpoint, "region": "us-east-1", **overrides})

    def env(self, **overrides: str) -> dict[str, str]:
        """The standard AWS variables for a child process (overrides win: a wrong key, say)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            **overrides,
        }

    def bucket(self) -> str:
        """A fresh bucket name (not created: the code under test creates it)."""
        return f"t-{secrets.token_hex(6)}"


def versitygw_binary() -> Path:
    if not os.access(BINARY, os.X_OK):
        unavailable(f"versitygw missing at {BINARY}: run `make s3-server` (needs Go)")
    return BINARY


@contextmanager
def running_s3_server(work: Path, again: S3Server | None = None) -> Iterator[S3Server]:
    """A server with its data under `work`; `again`: the same port and keys as that (stopped) one."""
    binary = versitygw_binary()
    data = work / "s3-data"
    data.mkdir(parents=True, exist_ok=True)
    if again is not None:
        port, access, secret = int(again.endpoint.rsplit(":", 1)[1]), again.access_key, again.secret_key
    else:
        port, access, secret = free_port(), f"AK{secrets.token_hex(8).upper()}", secrets.token_urlsafe(30)
    log = work / "versitygw.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(binary), "--port", f"127.0.0.1:{port}", "--quiet", "posix", str(data)],
            stdout=out,
            stderr=subprocess.STDOUT,
            # The root keys by environment, not argv: another user's `ps` shows a command line.
            env={
                "PATH": os.environ.get("PATH", ""),
                "HOME": str(work),
                "ROOT_ACCESS_KEY_ID": access,
                "ROOT_SECRET_ACCESS_KEY": secret,
            },
        )
    server = S3Server(f"http://127.0.0.1:{port}", access, secret, proc, log)
    try:
        fs = s3_filesystem(server.settings())
        wait_until(lambda: fs.ls("", refresh=True) is not None, 30.0, proc, 0.1, "versitygw to answer ListBuckets")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def dead_endpoint() -> str:
    """An endpoint nothing listens on (a port just released)."""
    return f"http://127.0.0.1:{free_port()}"
