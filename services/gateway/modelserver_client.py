"""The gateway's one client of the model server: v2 REST over keep-alive HTTP/1.1, one retry policy, one error table.

Inference goes as binary tensors both ways (services/oip/rest_codec.py); metadata, readiness,
configuration, statistics and repository calls as the model server's JSON, read back into the
protocol's messages (`inference.*Response`) so both of the gateway's transports can answer them.
Why REST rather than gRPC for this hop: `make bench-gateway-hop`.

Replicas: the configured name is resolved to every address it has, each with its own pool, and
each attempt goes to the one with the fewest requests in flight (endpoints.py); an address not
reached or answering 503 is ejected for a while, and the retry goes to another.

The policy, for every call: what is left of the request's deadline travels as
`X-Flywheel-Timeout-Ms`; a server not reached, a 503 (not ready) and a 429 (queue full: the
request was not run) are retried inside that budget only, after a back-off (at least the
server's `Retry-After-Ms`); a deadline that passed, a runtime failure and a bad request never
are. Not reaching the server, 503 and 504 count against the backend's circuit breaker; a server
that answered, even with an error, did not fail; a deadline the caller made too short to judge the
backend by (deadline.py) running out does not count either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import TypeVar
from urllib.parse import quote

from google.protobuf import json_format
from google.protobuf.message import Message

from services.gateway.breaker import Breakers
from services.gateway.deadline import Deadline
from services.gateway.endpoints import Endpoint, Endpoints, Resolver, dns_resolver
from services.gateway.errors import (
    BackendFailed,
    BackendOverloaded,
    BackendUnavailable,
    DeadlineExceeded,
    GatewayError,
    InvalidInput,
    ModelNotFound,
    RequestTooLarge,
)
from services.gateway.http1 import CONNECT_TIMEOUT_S, Answer, Http1Pool, NotReached, UnsafeHeader
from services.gateway.metrics import RETRIES, UPSTREAM_RESENDS
from services.genproto.inference import grpc_predict_v2_pb2 as pb
from services.oip import rest_codec
from services.oip.errors import ProtocolError
from services.oip.messages import InferRequest, InferResponse

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
REFUSED_HINT = "check the gateway's FLYWHEEL_SERVICE_TOKEN and the model server's FLYWHEEL_TRUSTED_CALLERS"
MIN_ATTEMPT_S = 0.002  # a retry needs at least this much budget left to be worth sending
RETRYABLE = (429, 503)


def _message(body: bytes, status: int) -> str:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return doc["error"]
    return body[:200].decode("utf-8", "replace") or f"HTTP {status}"


def _retry_after_s(headers: dict[str, str]) -> float | None:
    raw = headers.get("retry-after-ms")
    return float(raw) / 1000 if raw and raw.replace(".", "", 1).isdigit() else None


def error_of(status: int, body: bytes, headers: dict[str, str], addr: str, judged: bool = True) -> GatewayError:
    """The model server's error answer as the gateway's domain error (the one table of this hop)."""
    message = _message(body, status)
    if status in (401, 403):  # our own credential, not the caller's: a deployment fault
        return BackendFailed(f"the model server refuses the gateway's credential ({message}): {REFUSED_HINT}")
    if status == 404:
        return ModelNotFound(message)
    if status == 413:
        return RequestTooLarge(message)
    if status == 429:
        return BackendOverloaded(f"model server overloaded: {message}", _retry_after_s(headers))
    if status == 503:
        return BackendUnavailable(f"model server {addr} unavailable: {message}")
    if status == 504:
        return DeadlineExceeded(f"deadline exceeded at the model server: {message}", backend_fault=judged)
    if 400 <= status < 500:
        return InvalidInput(message)
    return BackendFailed(f"model server failed (HTTP {status}): {message}")


def _path(*segments: str) -> str:
    """A path from names the caller chose: each segment percent-encoded, '/' included."""
    return "/" + "/".join(quote(s, safe="") for s in segments)


def _model_path(name: str, version: str, *rest: str) -> str:
    return _path("v2", "models", name, *(("versions", version) if version else ()), *rest)


class ModelServerClient:
    def __init__(
        self,
        addr: str,
        breakers: Breakers,
        retries: int,
        backoff_s: float,
        max_response_bytes: int = 64 << 20,
        token: str = "",
        tls: ssl.SSLContext | None = None,
        resolve: Resolver | None = dns_resolver,
        refresh_s: float = 5.0,
        eject_s: float = 10.0,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        """`token`: the gateway's service credential, sent with every call (the model server admits no
        caller without one); `tls`: verify the model server over TLS with this context; `resolve`,
        `refresh_s`, `eject_s`: how `addr`'s replicas are found and balanced (endpoints.py);
        `connect_timeout_s`: see http1.CONNECT_TIMEOUT_S."""
        self.addr = addr

        def pool(connect: str) -> Http1Pool:  # one keep-alive pool per address; Host and TLS name stay `addr`
            resent = UPSTREAM_RESENDS.labels(connect)  # label: an address the lookup returned (endpoints.py)
            return Http1Pool(
                addr, max_response_bytes, tls, None if connect == addr else connect, resent.inc, connect_timeout_s
            )

        self.endpoints: Endpoints[Http1Pool] = Endpoints(addr, pool, resolve, refresh_s, eject_s)
        self._credential = {"authorization": f"Bearer {token}"} if token else {}
        self._breakers = breakers
        self._retries = retries
        self._backoff_s = backoff_s

    async def close(self) -> None:
        await self.endpoints.close()

    async def call(
        self,
        method: str,
        target: str,
        body: bytes,
        headers: dict[str, str],
        deadline: Deadline,
        backend: str,
        answers: tuple[int, ...] = (200,),
    ) -> Answer:
        """One request under the policy above; returns once the status is one of `answers`."""
        breaker = self._breakers.get(backend)
        attempt = 0
        last: Endpoint[Http1Pool] | None = None
        while True:
            left = deadline.check()
            breaker.before()
            # Never "0.000": a budget under 1 µs still travels as the smallest positive value the server accepts.
            sent = {**headers, **self._credential, rest_codec.TIMEOUT_HEADER: f"{max(left * 1000, 0.001):.3f}"}
            endpoint = last = self.endpoints.pick(avoid=last)  # a retry goes to another replica when there is one
            endpoint.begin()
            try:
                status, rheaders, rbody = await endpoint.pool.send(method, target, body, sent, left)
            except UnsafeHeader as exc:
                raise InvalidInput(str(exc)) from None
            except NotReached as exc:
                self.endpoints.eject(endpoint)
                breaker.failure()
                error: GatewayError = BackendUnavailable(f"model server {endpoint.addr} unavailable: {exc}")
            except TimeoutError:
                if deadline.judged:  # a caller's own tiny budget running out says nothing about the backend
                    breaker.failure()
                raise deadline.expired(f"no answer from {backend} within the deadline") from None
            else:
                if status in answers:
                    breaker.success()
                    return status, rheaders, rbody
                if status == 503:
                    self.endpoints.eject(endpoint)
                if status == 503 or (status == 504 and deadline.judged):
                    breaker.failure()
                else:
                    breaker.success()  # it answered: the backend is up
                error = error_of(status, rbody, rheaders, self.addr, deadline.judged)
                if status not in RETRYABLE:
                    raise error
            finally:
                endpoint.end()
            if attempt >= self._retries:
                raise error
            wait = max(self._backoff_s * (2**attempt), getattr(error, "retry_after_s", None) or 0.0)
            if deadline.remaining() < wait + MIN_ATTEMPT_S:
                raise error
            attempt += 1
            RETRIES.labels(self.addr).inc()
            await asyncio.sleep(wait)

    # -- inference ---------------------------------------------------------------------------
    async def infer(self, request: InferRequest, request_id: str, deadline: Deadline) -> InferResponse:
        body, headers = rest_codec.encode_request(request)
        headers["x-request-id"] = request_id
        backend = f"{self.addr}/{request.model}/{request.version or 'default'}"
        target = _model_path(request.model, request.version, "infer")
        _, rheaders, rbody = await self.call("POST", target, body, headers, deadline, backend)
        try:
            return rest_codec.decode_response(rbody, rheaders.get(rest_codec.HEADER_LENGTH_KEY))
        except ProtocolError as exc:
            raise BackendFailed(f"unreadable answer from the model server: {exc}") from None

    # -- health, metadata, repository ---------------------------------------------------------
    async def probe(self, timeout_s: float) -> str:
        """A request, no retry, no breaker, to a route that needs the gateway's credential, to each
        replica in turn until one answers: "" when one does, else why the last did not (unreachable,
        or the credential refused)."""
        problem = ""
        for endpoint in list(self.endpoints.iter_for_probe()):
            try:
                status, _, _ = await endpoint.pool.send("GET", "/v2", b"", self._credential, timeout_s)
            except (NotReached, TimeoutError) as exc:
                problem = f"model server not reachable at {endpoint.addr}: {exc or type(exc).__name__}"
                continue
            if status == 200:
                return ""
            if status in (401, 403):
                problem = f"model server at {endpoint.addr} refuses the gateway's credential: {REFUSED_HINT}"
            else:
                problem = f"model server at {endpoint.addr} answers HTTP {status}"
        return problem

    # Each kind of call has a breaker of its own, named after its RPC (never after a caller's string).
    async def _status(self, rpc: str, target: str, deadline: Deadline, no: int) -> bool:
        status, _, _ = await self.call("GET", target, b"", {}, deadline, f"{self.addr}/{rpc}", (200, no))
        return status == 200

    async def _get(self, rpc: str, target: str, deadline: Deadline, into: M, key: str = "") -> M:
        _, _, body = await self.call("GET", target, b"", {}, deadline, f"{self.addr}/{rpc}")
        return _parse(body, into, key)

    async def _post(self, rpc: str, target: str, body: bytes, deadline: Deadline) -> bytes:
        _, _, answer = await self.call("POST", target, body, _JSON, deadline, f"{self.addr}/{rpc}")
        return answer

    async def server_live(self, deadline: Deadline) -> bool:
        return await self._status("ServerLive", "/v2/health/live", deadline, 503)

    async def server_ready(self, deadline: Deadline) -> bool:
        return await self._status("ServerReady", "/v2/health/ready", deadline, 503)

    async def model_ready(self, name: str, version: str, deadline: Deadline) -> bool:
        return await self._status("ModelReady", _model_path(name, version, "ready"), deadline, 400)

    async def server_metadata(self, deadline: Deadline) -> pb.ServerMetadataResponse:
        return await self._get("ServerMetadata", "/v2", deadline, pb.ServerMetadataResponse())

    async def model_metadata(self, name: str, version: str, deadline: Deadline) -> pb.ModelMetadataResponse:
        return await self._get("ModelMetadata", _model_path(name, version), deadline, pb.ModelMetadataResponse())

    async def model_config(self, name: str, version: str, deadline: Deadline) -> pb.ModelConfigResponse:
        target = _model_path(name, version, "config")
        return await self._get("ModelConfig", target, deadline, pb.ModelConfigResponse(), "config")

    async def model_statistics(self, name: str, version: str, deadline: Deadline) -> pb.ModelStatisticsResponse:
        target = _model_path(name, version, "stats") if name else "/v2/models/stats"
        return await self._get("ModelStatistics", target, deadline, pb.ModelStatisticsResponse())

    async def repository_index(self, ready_only: bool, deadline: Deadline) -> pb.RepositoryIndexResponse:
        body = json.dumps({"ready": ready_only}).encode()
        answer = await self._post("RepositoryIndex", "/v2/repository/index", body, deadline)
        return _parse(answer, pb.RepositoryIndexResponse(), "models")

    async def repository_load(self, name: str, deadline: Deadline) -> None:
        await self._post("RepositoryModelLoad", _path("v2", "repository", "models", name, "load"), b"{}", deadline)

    async def repository_unload(self, name: str, deadline: Deadline) -> None:
        await self._post("RepositoryModelUnload", _path("v2", "repository", "models", name, "unload"), b"{}", deadline)


_JSON = {"content-type": rest_codec.JSON}


def _parse(body: bytes, into: M, key: str = "") -> M:
    """The model server's JSON answer → the protocol message (`key`: the field the JSON document fills)."""
    try:
        doc = json.loads(body)
        json_format.ParseDict({key: doc} if key else doc, into, ignore_unknown_fields=True)
    except (ValueError, json_format.ParseError) as exc:
        raise BackendFailed(f"unreadable answer from the model server: {exc}") from None
    return into
