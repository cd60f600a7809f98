"""The gateway's own request headers, read alike from HTTP headers and gRPC metadata (lower-case names)."""

from __future__ import annotations

from collections.abc import Mapping

from services.gateway.dataplane import Origin
from services.gateway.errors import InvalidInput

STICKY = "x-flywheel-sticky-key"
SYNTHETIC = "x-flywheel-synthetic"
REQUEST_ID = "x-request-id"


def synthetic_from_header(raw: str | None) -> bool:
    """X-Flywheel-Synthetic: load-test traffic, which drift, live accuracy and training data leave out.
    Absent: production traffic; 400 when not a boolean."""
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise InvalidInput(f"X-Flywheel-Synthetic must be true or false, got {raw[:40]!r}")


def origin_of(headers: Mapping[str, str], key_id: str) -> Origin:
    return Origin(
        key_id=key_id,
        sticky_key=headers.get(STICKY),
        request_id=headers.get(REQUEST_ID, ""),
        synthetic=synthetic_from_header(headers.get(SYNTHETIC)),
    )
