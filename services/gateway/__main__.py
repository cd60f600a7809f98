"""Flywheel gateway: KServe v2 REST and gRPC in front of the model server, a friendly :predict route,
API keys, rate limits, canary/shadow routing with automatic rollback, prediction logs.

`python -m services.gateway` (or `flywheel serve gateway`). Settings → database (migrated), keys,
routes, model-server client, prediction logger, Kafka → gRPC and HTTP servers on one event loop →
serve until SIGTERM → stop taking requests, finish in-flight ones and shadows, flush prediction
logs, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import threading
import time
from pathlib import Path

from services.config import CommonSettings, ConfigError
from services.events import EventProducer
from services.fetching import BoundedHttp, FetchLimits
from services.gateway.auth import Guard
from services.gateway.breaker import Breakers
from services.gateway.dataplane import Gateway, Limits
from services.gateway.endpoints import Resolver, dns_resolver, static_resolver
from services.gateway.instances import UrlReader
from services.gateway.keys import KeyStore
from services.gateway.model_cards import ModelCards
from services.gateway.modelserver_client import ModelServerClient
from services.gateway.prediction_log import CountingProducer, PredictionLogger
from services.gateway.ratelimit import TokenBuckets
from services.gateway.rollback import CanaryWatch, Thresholds
from services.gateway.routing import RouteTable
from services.gateway.settings import GatewaySettings
from services.gateway.tables import MIGRATIONS
from services.gateway.transport.grpc import NOT_SERVING, SERVING, build_grpc_server
from services.gateway.transport.model_events import archived_publisher, start_model_events
from services.gateway.transport.rest import build_asgi
from services.storage import Database, migrate
from services.telemetry import Readiness
from services.transportkit import bootstrap
from services.transportkit.drain import Drain, GrpcActivity, drain_http, remaining
from services.transportkit.listener import http_listener

log = logging.getLogger("services.gateway")
BOOTSTRAP_NAME = "bootstrap"  # the name of keys registered from FLYWHEEL_GATEWAY_BOOTSTRAP_KEYS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bootstrap.service_parser("gateway", __doc__, GatewaySettings, host=True)
    parser.add_argument("--modelserver-http-addr", help="model server HTTP host:port")
    parser.add_argument("--model-repository", type=Path, help="model repository folder (flywheel.json)")
    parser.add_argument("--events", action=argparse.BooleanOptionalAction, default=None, help="use Kafka")
    return parser.parse_args(argv)


def url_reader(settings: GatewaySettings) -> UrlReader | None:
    """Bounded GETs from the allow-listed hosts, or None when no host is allowed (URLs are refused)."""
    hosts = tuple(h.strip() for h in settings.fetch_allowed_hosts.split(",") if h.strip())
    if not hosts:
        return None
    http = BoundedHttp(
        FetchLimits(settings.fetch_max_bytes, settings.fetch_timeout_s), hosts, "FLYWHEEL_GATEWAY_FETCH_ALLOWED_HOSTS"
    )
    return http.get


def main(argv: list[str] | None = None) -> int:
    settings, common, stop = bootstrap.start("gateway", GatewaySettings, parse_args(argv))
    security = bootstrap.security(common)
    try:
        return bootstrap.run(lambda: serve(settings, common, security, stop.event), settings.event_loop)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2


def _resolver(settings: GatewaySettings) -> Resolver:
    """DNS, or the test-only fixed list (FLYWHEEL_GATEWAY_MODELSERVER_TEST_ADDRS)."""
    fixed = [a.strip() for a in settings.modelserver_test_addrs.split(",") if a.strip()]
    if fixed:
        log.warning("model server addresses fixed by MODELSERVER_TEST_ADDRS (tests only)", extra={"addrs": fixed})
        return static_resolver(fixed)
    return dns_resolver


async def _watch_backend(client: ModelServerClient, state: dict[str, str], stop: asyncio.Event) -> None:
    """Readiness of the model server (reachable, and admitting the gateway), polled so /readyz stays quick."""
    while not stop.is_set():
        state["problem"] = await client.probe(timeout_s=1.0)
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except TimeoutError:
            pass


async def serve(
    settings: GatewaySettings, common: CommonSettings, security: bootstrap.Security, stop: threading.Event
) -> int:
    """The gateway's routes are public (API keys with scopes are their credential): no caller check here.
    Its own service token is what the model server admits it by."""
    loop = asyncio.get_running_loop()
    url = common.resolved_database_url()
    await asyncio.to_thread(migrate, url, [MIGRATIONS])
    db = Database(url)
    keys = KeyStore(db, settings.key_cache_s)
    bootstrap_ids: set[str] = set()
    for key in (k.strip() for k in settings.bootstrap_keys.split(",") if k.strip()):
        try:
            if keys.ensure(key, BOOTSTRAP_NAME, ["predict", "admin"]):
                log.info("registered bootstrap key %s", key.split("_")[1])
        except ValueError as exc:
            raise ConfigError(f"FLYWHEEL_GATEWAY_BOOTSTRAP_KEYS: {exc}") from None
        bootstrap_ids.add(key.split("_")[1])
    # A bootstrap key rotated out of the settings (a new Secret) must stop working, not linger.
    for key_id in keys.revoke_others(BOOTSTRAP_NAME, bootstrap_ids):
        log.info("revoked bootstrap key %s: no longer in FLYWHEEL_GATEWAY_BOOTSTRAP_KEYS", key_id)
    routes = RouteTable(db)
    routes.load()

    producer: EventProducer | None = None
    if settings.events:
        producer = CountingProducer(common.kafka_bootstrap, client_id="gateway", **common.kafka_security())
    logger = PredictionLogger(producer, settings.log_queue_bound)
    logger.start()

    breakers = Breakers(settings.breaker_failures, settings.breaker_open_s)
    client = ModelServerClient(
        settings.modelserver_http_addr,
        breakers,
        settings.retries,
        settings.retry_backoff_ms / 1000,
        token=security.token,
        tls=security.tls.client_context(),
        resolve=_resolver(settings),
        refresh_s=settings.modelserver_resolve_s,
        eject_s=settings.modelserver_eject_s,
        connect_timeout_s=settings.modelserver_connect_timeout_s,
    )
    watch = CanaryWatch(
        Thresholds(
            settings.rollback_window_s,
            settings.rollback_min_requests,
            settings.rollback_max_error_rate,
            settings.rollback_max_p99_ms,
        )
    )
    gateway = Gateway(
        client,
        routes,
        watch,
        ModelCards(settings.model_repository),
        logger,
        Limits(
            settings.deadline_ms / 1000,
            settings.max_instances,
            settings.log_max_features,
            settings.max_request_pixels,
        ),
        on_rollback=archived_publisher(producer) if producer is not None else None,
        read_url=url_reader(settings),
    )
    guard = Guard(keys, TokenBuckets(settings.default_rate_per_s, settings.default_burst), settings.require_api_key)

    readiness = Readiness()
    readiness.add("database", db.ping)
    backend = {"problem": "not probed yet"}
    readiness.add("modelserver", lambda: (not backend["problem"], backend["problem"] or "ok"))
    stop_async = asyncio.Event()
    watcher = loop.create_task(_watch_backend(client, backend, stop_async))

    events_stop = threading.Event()
    events_thread = None
    if producer is not None:
        consume, events_thread = start_model_events(
            common.kafka_bootstrap,
            settings.events_group,
            routes,
            settings.canary_weight,
            producer,
            events_stop,
            common.kafka_security(),
        )
        readiness.add("model_events", consume.healthy)

    drain = Drain(build_asgi(gateway, guard, readiness, settings.max_request_bytes))
    readiness.add("draining", lambda: (not drain.draining, "draining" if drain.draining else "serving"))
    grpc_server, health = build_grpc_server(gateway, guard, settings.max_request_bytes, [GrpcActivity(drain)])
    grpc_port = security.tls.add_port(grpc_server, f"{settings.host}:{settings.grpc_port}")
    await grpc_server.start()
    await health.set("", SERVING)

    sock = http_listener(settings.host, settings.http_port)
    http, http_task = bootstrap.uvicorn_server(drain, sock, security.tls)
    log.info(
        "listening",
        extra={
            "http_port": sock.getsockname()[1],
            "grpc_port": grpc_port,
            "modelserver": settings.modelserver_http_addr,
            "routes": len(routes.all()),
        },
    )

    await asyncio.to_thread(stop.wait)
    log.info("draining")
    until = time.monotonic() + settings.drain_timeout_s
    # Unready but still serving, answers with Connection: close, then stop (transportkit/drain.py).
    await health.set("", NOT_SERVING)
    await drain_http(http, drain, until)
    await asyncio.gather(grpc_server.stop(remaining(until)), http_task)
    await gateway.drain(max(remaining(until), 1.0))
    stop_async.set()
    await watcher
    events_stop.set()
    if events_thread is not None:
        await asyncio.to_thread(events_thread.join, settings.drain_timeout_s)
    await asyncio.to_thread(logger.close, settings.drain_timeout_s)
    await client.close()
    db.close()
    log.info("stopped", extra={"prediction_logs_dropped": logger.dropped})
    return 0


if __name__ == "__main__":
    sys.exit(main())
