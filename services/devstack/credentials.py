"""The local stack's credentials: made by `flywheel up` the first time, kept in `<home>/run/credentials.json`.

Nothing is open by default and nothing is fixed in the code: every secret is random, generated
per home (mode 0600), and each service is told only what it needs:

- a service token per caller identity (`IDENTITIES`): a service that calls another presents its
  own (FLYWHEEL_SERVICE_TOKEN), and each service admits the callers its spec names
  (`ServiceSpec.callers` → FLYWHEEL_TRUSTED_CALLERS, as SHA-256 digests: no service holds a token
  that is not its own);
- the gateway's bootstrap API key (scopes predict, admin), for the operator's tools;
- ingest's Label Studio webhook token.

`operator` is the people and tools on this machine (the CLI, the demo, tests, load tests);
`labeler` is a label producer calling ingest's native routes. Rotate: `flywheel down`, delete the
file, `flywheel up` (SECURITY.md).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from services.devstack.stack import ServiceSpec
from services.transportkit.auth import TrustedCallers

IDENTITIES = ("operator", "gateway", "trainer", "labeler")
FILE = Path("run") / "credentials.json"


def _token() -> str:
    return secrets.token_urlsafe(32)


def _api_key() -> str:
    """A gateway API key (fwk_<id>_<secret>) made here, registered by the gateway at start (bootstrap)."""
    return f"fwk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32).replace('_', '-')}"


@dataclass(frozen=True)
class StackCredentials:
    tokens: dict[str, str]  # identity → service token
    gateway_key: str  # API key with scopes predict, admin
    webhook_token: str  # what Label Studio sends ingest

    @classmethod
    def generate(cls) -> StackCredentials:
        return cls({name: _token() for name in IDENTITIES}, _api_key(), _token())

    @classmethod
    def load(cls, home: Path) -> StackCredentials:
        """The home's credentials; FileNotFoundError when `flywheel up` has not made them yet."""
        doc = json.loads((home / FILE).read_text())
        return cls(dict(doc["tokens"]), doc["gateway_key"], doc["webhook_token"])

    @classmethod
    def for_home(cls, home: Path) -> StackCredentials:
        """The home's credentials, made and saved (0600) the first time."""
        try:
            return cls.load(home)
        except FileNotFoundError:
            made = cls.generate()
            made.save(home)
            return made

    def save(self, home: Path) -> None:
        path = home / FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(self), out, indent=2)
        tmp.replace(path)

    def token(self, identity: str = "operator") -> str:
        return self.tokens[identity]

    def bearer(self, identity: str = "operator") -> dict[str, str]:
        """The header an `identity` calls internal services with."""
        return {"authorization": f"Bearer {self.tokens[identity]}"}

    def gateway_bearer(self) -> dict[str, str]:
        """The header the operator calls the gateway with (its API key)."""
        return {"authorization": f"Bearer {self.gateway_key}"}

    def trusted(self, *callers: str) -> str:
        """FLYWHEEL_TRUSTED_CALLERS admitting these identities (digests only)."""
        return ",".join(TrustedCallers.entry(name, self.tokens[name]) for name in callers)

    def service_env(self, spec: ServiceSpec) -> dict[str, str]:
        """What one service is given: its own token (if it calls others), whom it admits, and its own secrets."""
        env = {"FLYWHEEL_TRUSTED_CALLERS": self.trusted(*spec.callers)}
        if spec.identity:
            env["FLYWHEEL_SERVICE_TOKEN"] = self.tokens[spec.identity]
        if spec.name == "gateway":
            env["FLYWHEEL_GATEWAY_BOOTSTRAP_KEYS"] = self.gateway_key
        if spec.name == "ingest":
            env["FLYWHEEL_INGEST_WEBHOOK_TOKEN"] = self.webhook_token
        return env
