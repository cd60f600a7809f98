"""TLS for HTTP and gRPC, on when the deployment mounts certificates (the chart's `tls` values: a
cert-manager-style Secret with tls.crt, tls.key and ca.crt).

A service serves TLS when it has a certificate and key (FLYWHEEL_TLS_CERT_FILE, FLYWHEEL_TLS_KEY_FILE),
and calls other services over TLS, verifying them against FLYWHEEL_TLS_CA_FILE, when it has a CA.
Without them everything is plaintext, as on `flywheel up`'s loopback.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc


@dataclass(frozen=True)
class Tls:
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""

    def check(self) -> Tls:
        """ValueError naming what is missing or unreadable (at start-up, before a socket opens)."""
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("FLYWHEEL_TLS_CERT_FILE and FLYWHEEL_TLS_KEY_FILE go together: set both or neither")
        for name, path in (("CERT", self.cert_file), ("KEY", self.key_file), ("CA", self.ca_file)):
            if path and not Path(path).is_file():
                raise ValueError(f"FLYWHEEL_TLS_{name}_FILE={path}: no such file")
        return self

    @property
    def serving(self) -> bool:
        return bool(self.cert_file)

    @property
    def calling(self) -> bool:
        return bool(self.ca_file)

    @property
    def scheme(self) -> str:
        """How this process addresses other services over HTTP."""
        return "https" if self.calling else "http"

    def uvicorn_options(self) -> dict[str, Any]:
        return {"ssl_certfile": self.cert_file, "ssl_keyfile": self.key_file} if self.serving else {}

    def add_port(self, server: grpc.Server | grpc.aio.Server, address: str) -> int:
        """Bind a gRPC server's port, with TLS when this process serves it."""
        if not self.serving:
            return server.add_insecure_port(address)
        creds = grpc.ssl_server_credentials([(Path(self.key_file).read_bytes(), Path(self.cert_file).read_bytes())])
        return server.add_secure_port(address, creds)

    def channel(self, address: str, options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
        """A gRPC channel to another service: TLS verified against the CA when there is one."""
        if not self.calling:
            return grpc.insecure_channel(address, options=options)
        creds = grpc.ssl_channel_credentials(root_certificates=Path(self.ca_file).read_bytes())
        return grpc.secure_channel(address, creds, options=options)

    def client_context(self) -> ssl.SSLContext | None:
        """An SSL context verifying other services (None: plaintext)."""
        return ssl.create_default_context(cafile=self.ca_file) if self.calling else None
