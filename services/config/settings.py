"""Settings base classes and the one place a bad value turns into a clear start-up error.

Every service declares a `pydantic_settings.BaseSettings` subclass whose fields are read from
`FLYWHEEL_<SERVICE>_<FIELD>` variables; what all services share (broker, database, object
store) lives in `CommonSettings` under the bare `FLYWHEEL_` prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)


class ConfigError(SystemExit):
    """A configuration value is invalid; the message names the variable and the reason."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CommonSettings(BaseSettings):
    """Settings every service shares. Each field is the env var FLYWHEEL_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", extra="ignore")

    home: Path = Field(Path(".flywheel"), description="state folder: logs, SQLite file, objects, lake")
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]")
    database_url: str = Field("", description="SQLAlchemy URL; empty means SQLite under FLYWHEEL_HOME")
    object_store_url: str = Field("", description="fsspec URL for objects; empty means FLYWHEEL_HOME/objects")
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="log level")
    # Service-to-service authentication (services/transportkit/auth.py, SECURITY.md)
    service_token: str = Field(
        "", description="this process's credential when it calls another service (sent as Authorization: Bearer)"
    )
    trusted_callers: str = Field(
        "",
        description="who may call this service's internal routes: name:sha256-of-token,… "
        "(empty: nobody, every route but health, readiness and metrics answers 401)",
    )
    # TLS (services/transportkit/tls.py): serve it with a certificate and key, call others over it with a CA
    tls_cert_file: str = Field("", description="PEM certificate this service serves HTTP and gRPC with")
    tls_key_file: str = Field("", description="PEM private key of that certificate")
    tls_ca_file: str = Field("", description="PEM CA that other services' certificates are checked against")
    # Kafka security, passed through to every Kafka client (librdkafka settings)
    kafka_security_protocol: str = Field(
        "PLAINTEXT", pattern=r"^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$", description="Kafka security.protocol"
    )
    kafka_sasl_mechanism: str = Field(
        "", pattern=r"^(|PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)$", description="Kafka sasl.mechanism"
    )
    kafka_sasl_username: str = Field("", description="Kafka sasl.username")
    kafka_sasl_password: str = Field("", description="Kafka sasl.password")
    kafka_ssl_ca_file: str = Field("", description="Kafka ssl.ca.location (PEM)")
    kafka_ssl_cert_file: str = Field("", description="Kafka ssl.certificate.location (PEM, for mutual TLS)")
    kafka_ssl_key_file: str = Field("", description="Kafka ssl.key.location (PEM, for mutual TLS)")

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'flywheel.db').resolve()}"

    def resolved_object_store_url(self) -> str:
        return self.object_store_url or f"file://{(self.home / 'objects').resolve()}"

    def kafka_security(self) -> dict[str, str]:
        """The librdkafka settings that authenticate and encrypt this process's Kafka clients ({} when plaintext)."""
        config = (
            {"security.protocol": self.kafka_security_protocol} if self.kafka_security_protocol != "PLAINTEXT" else {}
        )
        for key, value in (
            ("sasl.mechanism", self.kafka_sasl_mechanism),
            ("sasl.username", self.kafka_sasl_username),
            ("sasl.password", self.kafka_sasl_password),
            ("ssl.ca.location", self.kafka_ssl_ca_file),
            ("ssl.certificate.location", self.kafka_ssl_cert_file),
            ("ssl.key.location", self.kafka_ssl_key_file),
        ):
            if value:
                config[key] = value
        return config


def _env_name(settings_cls: type[BaseSettings], loc: tuple[Any, ...]) -> str:
    prefix = settings_cls.model_config.get("env_prefix", "")
    field = str(loc[0]) if loc else "?"
    return f"{prefix}{field}".upper()


def load_settings(settings_cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment plus explicit overrides (CLI flags).

    Raises ConfigError (a SystemExit with exit status 2 semantics) whose message names each
    bad variable, its value and what was expected, so `__main__` exits before opening a socket.
    """
    try:
        return settings_cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = _env_name(settings_cls, err.get("loc", ()))
            value = err.get("input")
            lines.append(f"  {name}={value!r}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None


def describe_settings(*settings_classes: type[BaseSettings]) -> str:
    """The environment variables of the given classes, for `--help` epilogs."""
    rows = []
    for cls in settings_classes:
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            default = field.default if field.default is not None else ""
            rows.append(f"  {(prefix + name).upper():<44} {field.description or ''} [default: {default}]")
    return "environment variables:\n" + "\n".join(rows)
