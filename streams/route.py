"""Routing: which stores an event goes to (hot, cold or both), by configured rules.

Rules are tried in order; the first whose every condition matches decides. Conditions compare
``event_type``, ``tenant`` and ``classification`` with a value or a list of values. Without a
matching rule the ``default`` applies. Example (``config/routes.yaml``)::

    default: both
    rules:
      - when: {classification: restricted}
        route: cold
      - when: {event_type: page_view, tenant: [globex]}
        route: hot
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field


class Route(StrEnum):
    HOT = "hot"
    COLD = "cold"
    BOTH = "both"

    @property
    def hot(self) -> bool:
        return self is not Route.COLD

    @property
    def cold(self) -> bool:
        return self is not Route.HOT


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    when: dict[str, str | list[str]] = Field(default_factory=dict)
    route: Route

    def matches(self, attributes: dict[str, str]) -> bool:
        for name, expected in self.when.items():
            allowed = [expected] if isinstance(expected, str) else expected
            if attributes.get(name) not in allowed:
                return False
        return True


class RoutingTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: Route = Route.BOTH
    rules: list[Rule] = Field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None) -> RoutingTable:
        if path is None or not path.exists():
            return cls()
        raw: Any = yaml.safe_load(path.read_text()) or {}
        table = cls.model_validate(raw)
        unknown = {k for r in table.rules for k in r.when} - {
            "event_type",
            "tenant",
            "classification",
        }
        if unknown:
            raise ValueError(f"routing rules use unknown attributes: {sorted(unknown)}")
        return table

    def route(self, event_type: str, tenant: str, classification: str) -> Route:
        attributes = {"event_type": event_type, "tenant": tenant, "classification": classification}
        for rule in self.rules:
            if rule.matches(attributes):
                return rule.route
        return self.default
