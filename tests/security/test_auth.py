"""Every door of the running stack, tried without a credential: only health, readiness, metrics and the public
routes (the gateway's, which take API keys; ingest's Label Studio webhook, which takes its token) answer.

The routes come from each service's own OpenAPI document (read with the operator's credential), plus
the v2 inference routes served ahead of FastAPI and a path that exists nowhere; the RPCs from the
services' protobuf descriptors. Each is called with no credential, with a token of this stack that the
service does not trust, and with a well-formed token of no one.
"""

from __future__ import annotations

import re

import grpc
import httpx
import pytest
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.genproto.flywheel.v1 import ingest_pb2, lake_pb2, trainer_pb2
from services.genproto.inference import grpc_predict_v2_pb2
from tests.security.conftest import MODEL, Stack

HEALTH = {"/healthz", "/readyz", "/metrics"}
PUBLIC = {
    "modelserver": HEALTH | {"/v2/health/live", "/v2/health/ready"},
    "ingest": HEALTH | {"/webhooks/label-studio"},
    "lake": HEALTH,
    "trainer": HEALTH,
    "monitor": HEALTH,
}
EXTRA_PATHS = [
    ("post", f"/v2/models/{MODEL}/infer"),
    ("post", f"/v2/models/{MODEL}/versions/1/infer"),
    ("get", "/docs"),
    ("get", "/openapi.json"),
    ("get", "/no/such/route"),
]
# The gRPC services of the internal services, as their protobuf descriptors list them.
RPCS = {
    "modelserver": grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
    "ingest": ingest_pb2.DESCRIPTOR.services_by_name["Ingest"],
    "lake": lake_pb2.DESCRIPTOR.services_by_name["Lake"],
    "trainer": trainer_pb2.DESCRIPTOR.services_by_name["Trainer"],
}


def _routes(stack: Stack, service: str) -> list[tuple[str, str]]:
    doc = httpx.get(f"{stack.url(service)}/openapi.json", headers=stack.operator, timeout=10).json()
    found = [
        (method, re.sub(r"\{[^}]+\}", "x", path))
        for path, ops in doc["paths"].items()
        for method in ops
        if method in ("get", "post", "put", "delete", "patch")
    ]
    return found + EXTRA_PATHS


def _bad_credentials(stack: Stack, service: str) -> list[dict[str, str]]:
    untrusted = "labeler" if service != "ingest" else "gateway"
    return [
        {},
        stack.credentials.bearer(untrusted),
        {"authorization": "Bearer " + "n" * 43},
        {"authorization": "Basic x"},
    ]


@pytest.mark.parametrize("service", sorted(PUBLIC))
def test_no_internal_route_answers_without_a_trusted_callers_credential(stack: Stack, service: str) -> None:
    routes = _routes(stack, service)
    assert len(routes) > len(EXTRA_PATHS) or service == "monitor", routes
    opened = []
    for method, path in routes:
        for headers in _bad_credentials(stack, service):
            r = httpx.request(method, f"{stack.url(service)}{path}", headers=headers, timeout=10)
            if path in PUBLIC[service]:
                continue
            if r.status_code != 401:
                opened.append((method, path, headers.get("authorization", "")[:12], r.status_code))
    assert not opened, opened
    for path in PUBLIC[service] & HEALTH:
        assert httpx.get(f"{stack.url(service)}{path}", timeout=10).status_code == 200


def test_every_gateway_route_but_health_and_docs_needs_an_api_key(stack: Stack) -> None:
    gw = stack.url("gateway")
    doc = httpx.get(f"{gw}/openapi.json", timeout=10).json()
    open_paths = {"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"}
    opened = []
    for path, ops in doc["paths"].items():
        for method in ops:
            target = re.sub(r"\{[^}]+\}", MODEL, path)
            r = httpx.request(method, f"{gw}{target}", headers=stack.operator, timeout=10)  # a service token is no key
            if path not in open_paths and r.status_code != 401:
                opened.append((method, path, r.status_code))
    assert not opened, opened


@pytest.mark.parametrize("service", sorted(RPCS))
def test_no_rpc_answers_without_a_trusted_callers_credential(stack: Stack, service: str) -> None:
    descriptor = RPCS[service]
    for identity in (None, "labeler" if service != "ingest" else "gateway"):
        with stack.channel(service, identity) as channel:
            for method in descriptor.methods:
                path = f"/{descriptor.full_name}/{method.name}"
                if method.client_streaming:
                    call = channel.stream_unary(path)
                    request: object = iter([b""])
                elif method.server_streaming:
                    call = channel.unary_stream(path)
                    request = b""
                else:
                    call = channel.unary_unary(path)
                    request = b""
                with pytest.raises(grpc.RpcError) as err:
                    answer = call(request, timeout=10)
                    if method.server_streaming:
                        list(answer)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, (path, identity, err.value.details())
            health = health_pb2_grpc.HealthStub(channel)
            if service == "modelserver":  # the one with a gRPC health service of its own
                assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == 1


def test_the_gateways_rpcs_need_an_api_key_but_liveness(stack: Stack) -> None:
    descriptor = RPCS["modelserver"]
    with grpc.insecure_channel(stack.grpc_addr("gateway")) as channel:
        for method in descriptor.methods:
            if method.client_streaming or method.server_streaming:
                continue
            path = f"/{descriptor.full_name}/{method.name}"
            message = message_factory.GetMessageClass(method.input_type)
            request = message(**({"model_name": MODEL} if method.name == "ModelInfer" else {}))
            try:
                channel.unary_unary(path)(
                    request.SerializeToString(), metadata=list(stack.operator.items()), timeout=10
                )
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
            if method.name in ("ServerLive", "ServerReady"):
                assert code == grpc.StatusCode.OK, method.name
            else:
                assert code == grpc.StatusCode.UNAUTHENTICATED, (method.name, code)
