"""Where the demo's stack listens, read from the runner's components, and thin clients for it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from services.devstack.credentials import StackCredentials
from services.devstack.supervisor import Component


class DemoError(RuntimeError):
    """A step of the demo could not complete; the message says which and where to look."""


@dataclass
class Endpoints:
    http: dict[str, str]  # service -> base URL
    grpc: dict[str, str]  # service -> host:port
    kafka: str
    prometheus: str | None
    logs: dict[str, str]
    credentials: StackCredentials

    def client(self, timeout_s: float = 30) -> httpx.Client:
        """An HTTP client that calls internal services as the operator (a gateway call passes its API key)."""
        return httpx.Client(timeout=timeout_s, headers=self.credentials.bearer("operator"))

    @classmethod
    def from_components(cls, components: list[Component], credentials: StackCredentials) -> Endpoints:
        http, grpc, logs = {}, {}, {}
        kafka, prometheus = "", None
        for c in components:
            logs[c.name] = c.log
            if c.kind == "broker":
                kafka = c.address
            elif c.kind == "metrics":
                prometheus = f"http://{c.address}"
            else:
                for role, addr in c.roles().items():
                    (http if role == "http" else grpc)[c.name] = f"http://{addr}" if role == "http" else addr
        return cls(http, grpc, kafka, prometheus, logs, credentials)


def check(resp: httpx.Response, what: str) -> Any:
    if resp.status_code >= 400:
        raise DemoError(f"{what}: HTTP {resp.status_code} {resp.text[:300]}")
    return resp.json()


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.5) -> Any:
    """Poll until `condition()` is truthy; DemoError naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (httpx.HTTPError, DemoError) as exc:
            last_error = exc
        time.sleep(every_s)
    detail = f" (last error: {last_error})" if last_error else ""
    raise DemoError(f"timed out after {timeout_s:.0f}s waiting for {what}{detail}")


def scrape(base_url: str, name: str, **labels: str) -> float:  # /metrics is open: Prometheus scrapes it
    """Sum of a metric's samples on a service's /metrics whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base_url}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def firing_alerts(prometheus: str) -> list[dict]:
    data = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()
    return [a for a in data.get("data", {}).get("alerts", []) if a.get("state") == "firing"]
