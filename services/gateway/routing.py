"""Model aliases and traffic split: production, canary (weighted, sticky by a request key) and shadow.

A route per model: `production` and `canary` are version strings ("" = none), `canary_weight` is
the canary's share in [0, 1], `shadow` a version that receives a copy of each request whose
answer is logged and never returned. A model without a route goes to the model server's own
default (its latest version). Routes are kept in SQL (write-through) so a restart keeps them.
"""

from __future__ import annotations

import hashlib
import random
import threading
from dataclasses import dataclass, replace

from sqlalchemy import delete, select

from services.gateway.errors import InvalidInput
from services.gateway.tables import routes as routes_table
from services.storage import Database

PRODUCTION, CANARY, SHADOW = "production", "canary", "shadow"


@dataclass(frozen=True)
class Route:
    model: str
    production: str = ""
    canary: str = ""
    canary_weight: float = 0.0
    shadow: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "production": self.production,
            "canary": self.canary,
            "canary_weight": self.canary_weight,
            "shadow": self.shadow,
        }


@dataclass(frozen=True)
class Choice:
    version: str  # "" = the model server's default version
    route: str  # production or canary
    shadow: str  # "" = no shadow copy


def sticky_unit(model: str, key: str) -> float:
    """A stable number in [0, 1) for (model, key): the same caller always lands on the same side."""
    digest = hashlib.blake2b(f"{model}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _check_version(name: str, value: str) -> str:
    if value and not value.isdigit():
        raise InvalidInput(f"{name} must be a version number, got {value!r}")
    return value


class RouteTable:
    def __init__(self, db: Database | None) -> None:
        self._db = db
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        self._rng = random.Random()

    def load(self) -> None:
        if self._db is None:
            return
        with self._db.session() as s:
            rows = s.execute(select(routes_table)).all()
        with self._lock:
            self._routes = {
                r.model: Route(r.model, r.production, r.canary, float(r.canary_weight), r.shadow) for r in rows
            }

    def get(self, model: str) -> Route | None:
        with self._lock:
            return self._routes.get(model)

    def all(self) -> list[Route]:
        with self._lock:
            return sorted(self._routes.values(), key=lambda r: r.model)

    def choose(self, model: str, version: str, sticky_key: str | None) -> Choice:
        route = self.get(model)
        if version:
            side = CANARY if route is not None and version == route.canary else PRODUCTION
            return Choice(version, side, "")
        if route is None:
            return Choice("", PRODUCTION, "")
        if route.canary and route.canary_weight > 0:
            u = sticky_unit(model, sticky_key) if sticky_key else self._rng.random()
            if u < route.canary_weight:
                return Choice(route.canary, CANARY, route.shadow)
        return Choice(route.production, PRODUCTION, route.shadow)

    def put(self, route: Route) -> Route:
        for name in ("production", "canary", "shadow"):
            _check_version(name, getattr(route, name))
        if not 0.0 <= route.canary_weight <= 1.0:
            raise InvalidInput(f"canary_weight must be in [0, 1], got {route.canary_weight}")
        if route.canary_weight > 0 and not route.canary:
            raise InvalidInput("canary_weight > 0 needs a canary version")
        with self._lock:
            self._routes[route.model] = route
        self._persist(route)
        return route

    def update(self, model: str, **changes: object) -> Route:
        """Change some fields of a model's route (created empty if absent) and persist it."""
        with self._lock:
            current = self._routes.get(model, Route(model))
        return self.put(replace(current, **changes))  # type: ignore[arg-type]

    def remove(self, model: str) -> bool:
        with self._lock:
            found = self._routes.pop(model, None) is not None
        if self._db is not None:
            with self._db.session() as s:
                s.execute(delete(routes_table).where(routes_table.c.model == model))
        return found

    def _persist(self, route: Route) -> None:
        if self._db is None:
            return
        values = route.as_dict()
        with self._db.session() as s:
            s.execute(delete(routes_table).where(routes_table.c.model == route.model))
            s.execute(routes_table.insert().values(**values))
