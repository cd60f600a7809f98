"""`python -m services.monitor`: consume predictions, test drift, export metrics, close the loop."""

from __future__ import annotations

import argparse
import logging
import threading

from services.config import CommonSettings, describe_settings, load_settings
from services.events import ConsumeLoop, ConsumerConfig, EventProducer, ensure_topics
from services.events.topics import PROJECTS
from services.monitor.detector import DriftConfig, project_drift
from services.monitor.monitor import Monitor, WindowParams
from services.monitor.policy import RetrainPolicy
from services.monitor.reference import ReferenceStore, SnapshotMap
from services.monitor.settings import MonitorSettings, parse_hyperparameters, resolved_lake_root
from services.monitor.transport.kafka import MonitorHandler, restore_state, validators
from services.monitor.transport.rest import monitor_asgi
from services.projects.catalog import Catalog, CatalogFollower
from services.telemetry import Readiness, StopSignal, configure_logging, serve_http_in_thread
from services.transportkit import bootstrap

log = logging.getLogger("services.monitor")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m services.monitor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=describe_settings(CommonSettings, MonitorSettings),
    )
    parser.add_argument("--http-port", type=int, help="overrides FLYWHEEL_MONITOR_HTTP_PORT")
    parser.add_argument("--lake-root", help="overrides FLYWHEEL_MONITOR_LAKE_ROOT")
    parser.add_argument("--group", help="overrides FLYWHEEL_MONITOR_GROUP")
    return parser.parse_args(argv)


def build_monitor(settings: MonitorSettings, common: CommonSettings, catalog: Catalog | None = None) -> Monitor:
    config = DriftConfig(
        features=settings.features,
        alpha=settings.alpha,
        correction=settings.correction,
        min_samples=settings.min_samples,
        min_drifted_share=settings.min_drifted_share,
        min_effect=settings.min_effect,
        dedupe=settings.dedupe,
    )
    return Monitor(
        config,
        WindowParams(
            settings.window_size,
            settings.window_step,
            settings.time_window_s,
            settings.time_step_s,
            settings.time_window_max,
        ),
        ReferenceStore(resolved_lake_root(settings, common.home)),
        SnapshotMap(settings.model_repository),
        RetrainPolicy(
            settings.train_cooldown_s,
            settings.train_budget,
            settings.train_budget_period_s,
            escalation=settings.train_escalation,
        ),
        persist_windows=settings.persist_windows,
        alert_repeat_s=settings.alert_repeat_s,
        label_join_max=settings.label_join_max,
        accuracy_window=settings.accuracy_window,
        config_for=(lambda model: project_drift(config, catalog, model)) if catalog is not None else None,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common = load_settings(CommonSettings)
    settings = load_settings(MonitorSettings, http_port=args.http_port, lake_root=args.lake_root, group=args.group)
    configure_logging("monitor", common.log_level)
    security = bootstrap.security(common)
    stop = StopSignal().install()

    kafka = common.kafka_security()
    ensure_topics(common.kafka_bootstrap, [PROJECTS], security=kafka)
    catalog = Catalog()
    follower = CatalogFollower(common.kafka_bootstrap, catalog, stop.event, security=kafka)
    follower.load()
    monitor = build_monitor(settings, common, catalog)
    restore_state(monitor, common.kafka_bootstrap, settings.group, kafka)
    producer = EventProducer(common.kafka_bootstrap, client_id=settings.group, **kafka)
    handler = MonitorHandler(
        monitor,
        producer,
        settings.train_budget_s,
        settings.train_model_family,
        parse_hyperparameters(settings.train_hyperparameters),
    )
    loop = ConsumeLoop(
        ConsumerConfig(
            bootstrap=common.kafka_bootstrap,
            group=settings.group,
            topics=handler.topics,
            validators=validators(monitor),
            extra=kafka,
        ),
        handler,
        producer,
        stop.event,
    )
    readiness = Readiness()
    readiness.add("kafka", loop.healthy)
    readiness.add("projects", follower.healthy)
    threading.Thread(target=follower.run, name="projects", daemon=True).start()
    http = serve_http_in_thread(
        monitor_asgi(monitor, readiness, security.callers),
        settings.host,
        settings.http_port,
        ssl=security.tls.uvicorn_options(),
    )
    log.info(
        "monitor started",
        extra={"http_port": http.port, "lake_root": monitor.references.lake_root, "group": settings.group},
    )
    consumer = threading.Thread(target=loop.run, name="consume", daemon=False)
    consumer.start()
    status = 0
    try:
        while not stop.wait(0.5):
            if not consumer.is_alive():
                log.error("the consume loop died; stopping")
                status = 1
                break
    finally:
        stop.event.set()
        consumer.join(60)
        producer.close()
        http.stop()
    log.info("monitor stopped", extra={"status": status})
    return status


if __name__ == "__main__":
    raise SystemExit(main())
