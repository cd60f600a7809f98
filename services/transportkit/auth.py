"""Service-to-service authentication: every internal route and RPC admits only callers the service trusts.

Flywheel trusts no network position. Every HTTP route and gRPC method of a service passes one
check here, except health, readiness and metrics (`PUBLIC_PATHS`, `HEALTH_METHODS`) and the
routes the service itself declares public because they carry credentials of their own (the
gateway's API keys, ingest's Label Studio webhook token). The check: `Authorization: Bearer
<token>` (HTTP header, or gRPC metadata `authorization`) whose token belongs to a caller named in
the service's `FLYWHEEL_TRUSTED_CALLERS`.

That setting holds `name:sha256(token)` pairs, never tokens: a service can check its callers and
cannot pose as one. A service's own token (`FLYWHEEL_SERVICE_TOKEN`) is what it presents when it
calls another. A service that trusts no caller answers every internal route 401: nothing is open
by default. Who may call whom is the deployment's decision (services/devstack/credentials.py for
`flywheel up`, the chart's values for Kubernetes); SECURITY.md has the table.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from services.transportkit.errors import ErrorTable, NotAdmitted
from services.transportkit.grpc import same_kind
from services.transportkit.rest import ASGIApp, Receive, Scope, Send, refused, reply

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
HEALTH_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
MIN_TOKEN_CHARS = 32
CALLER_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_TOKEN = re.compile(r"[\x21-\x7e]+")  # it travels in a header: visible ASCII, no spaces
CALLERS_HELP = "name:sha256hex,… (see SECURITY.md); empty: no caller, every internal route answers 401"


def digest(token: str) -> str:
    """What FLYWHEEL_TRUSTED_CALLERS holds for a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_token(token: str, what: str = "FLYWHEEL_SERVICE_TOKEN") -> str:
    """A service token, or ValueError naming the problem (too short to be random, or not header-safe)."""
    if len(token) < MIN_TOKEN_CHARS or not _TOKEN.fullmatch(token):
        raise ValueError(f"{what} must be at least {MIN_TOKEN_CHARS} visible ASCII characters without spaces")
    return token


def bearer(token: str) -> dict[str, str]:
    """The header a caller sends (lower-case name: HTTP header and gRPC metadata alike)."""
    return {"authorization": f"Bearer {token}"} if token else {}


@dataclass(frozen=True)
class TrustedCallers:
    """The callers one service admits: name → SHA-256 of the caller's token."""

    digests: Mapping[str, str]

    @classmethod
    def parse(cls, spec: str) -> TrustedCallers:
        """`name:sha256hex,…` (FLYWHEEL_TRUSTED_CALLERS); ValueError saying which entry is wrong."""
        digests: dict[str, str] = {}
        for entry in (e.strip() for e in spec.split(",") if e.strip()):
            name, _, value = entry.partition(":")
            if not CALLER_NAME.fullmatch(name) or not _DIGEST.fullmatch(value):
                raise ValueError(
                    f"entry {entry[:80]!r} is not name:sha256hex (a lower-case name, 64 hex digits of SHA-256)"
                )
            if name in digests:
                raise ValueError(f"caller {name!r} is named twice")
            digests[name] = value
        return cls(digests)

    @staticmethod
    def entry(name: str, token: str) -> str:
        return f"{name}:{digest(token)}"

    def identify(self, authorization: str | None) -> str:
        """The name of the caller whose token the header carries; NotAdmitted otherwise."""
        if not self.digests:
            raise NotAdmitted("this service admits no caller: set FLYWHEEL_TRUSTED_CALLERS (see SECURITY.md)")
        if not authorization:
            raise NotAdmitted("a service credential is required: Authorization: Bearer <token>")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAdmitted("the service credential must be sent as Authorization: Bearer <token>")
        presented = digest(token.strip())
        found = ""
        for name, expected in self.digests.items():  # every entry compared, in constant time each
            if hmac.compare_digest(presented, expected):
                found = name
        if not found:
            raise NotAdmitted("the service credential is not one this service trusts")
        return found


class CallerCheck:
    """ASGI: every request to a path outside `public` must come from a trusted caller (else 401 by `errors`).

    `public` holds exact paths; an entry ending in "/*" admits one more path segment below it
    (ingest's per-project webhook `/webhooks/label-studio/{project}`), never deeper.
    """

    def __init__(self, app: ASGIApp, callers: TrustedCallers, errors: ErrorTable, public: Collection[str] = ()) -> None:
        self.app = app
        self.callers = callers
        self.errors = errors
        self.public = PUBLIC_PATHS | frozenset(p for p in public if not p.endswith("/*"))
        self.public_parents = frozenset(p[:-2] for p in public if p.endswith("/*"))

    def _is_public(self, path: str) -> bool:
        if path in self.public:
            return True
        parent, _, leaf = path.rpartition("/")
        return bool(leaf) and parent in self.public_parents

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        try:
            scope["flywheel.caller"] = self.callers.identify(header.decode("latin-1") if header is not None else None)
        except NotAdmitted as exc:
            await reply(send, *refused(self.errors, exc, scope["path"]))
            return
        await self.app(scope, receive, send)


# -- gRPC ---------------------------------------------------------------------------------------
def _metadata_value(metadata: Any, key: str) -> str | None:
    for k, v in metadata or ():
        if k == key and isinstance(v, str):
            return v
    return None


def _refusal(handler: grpc.RpcMethodHandler, message: str, aio: bool) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED without running anything."""
    code = grpc.StatusCode.UNAUTHENTICATED

    if aio:

        async def refuse(request: Any, context: Any) -> Any:
            await context.abort(code, message)

    else:

        def refuse(request: Any, context: Any) -> Any:
            context.abort(code, message)

    return same_kind(handler)(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class GrpcCallerCheck(grpc.ServerInterceptor):
    """The same check for a thread-pool gRPC server; methods in `public` (health by default) pass."""

    def __init__(self, callers: TrustedCallers, public: Collection[str] = HEALTH_METHODS) -> None:
        self.callers = callers
        self.public = frozenset(public)

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None], details: Any
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or details.method in self.public:
            return handler
        try:
            self.callers.identify(_metadata_value(details.invocation_metadata, "authorization"))
        except NotAdmitted as exc:
            return _refusal(handler, str(exc), aio=False)
        return handler


class AioGrpcCallerCheck(grpc.aio.ServerInterceptor):
    """The same check for a grpc.aio server."""

    def __init__(self, callers: TrustedCallers, public: Collection[str] = HEALTH_METHODS) -> None:
        self.callers = callers
        self.public = frozenset(public)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or details.method in self.public:
            return handler
        try:
            self.callers.identify(_metadata_value(details.invocation_metadata, "authorization"))
        except NotAdmitted as exc:
            return _refusal(handler, str(exc), aio=True)
        return handler


class _Credential(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call of a channel (no TLS needed, unlike call credentials)."""

    def __init__(self, token: str) -> None:
        self._metadata = tuple(bearer(token).items())

    def _with(self, details: Any) -> Any:
        return _Details(details, (*(details.metadata or ()), *self._metadata))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with(details), requests)


class _Details(grpc.ClientCallDetails):
    def __init__(self, base: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


def authenticated_channel(channel: grpc.Channel, token: str) -> grpc.Channel:
    """`channel` with this process's service token on every call (unchanged when there is no token)."""
    return grpc.intercept_channel(channel, _Credential(token)) if token else channel
