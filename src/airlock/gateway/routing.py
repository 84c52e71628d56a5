"""Model name to an ordered list of upstream targets (failover order)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from airlock.config.schema import Config, ModelSpec, Upstream
from airlock.errors import ModelNotFound


@dataclass(frozen=True)
class ResolvedTarget:
    upstream: Upstream
    model: ModelSpec
    upstream_model: str  # the model name sent upstream
    auth_header: str | None  # injected, never recorded

    @property
    def address(self) -> str:
        return self.upstream.base_url


@dataclass(frozen=True)
class ResolvedRoute:
    name: str  # the alias, or the model name when addressed directly
    targets: tuple[ResolvedTarget, ...]
    reason: str = ""  # why these targets, in this order

    @property
    def decision(self) -> dict[str, Any]:
        """The routing decision as recorded in the span's `airlock.decisions`."""
        return {"kind": "route", "verdict": "chosen", "outcome": "allow", "route": self.name, "reason": self.reason}


def _order(targets: tuple[ResolvedTarget, ...]) -> str:
    return ", ".join(f"{t.upstream.name}/{t.upstream_model}" for t in targets)


class Router:
    def __init__(self, config: Config, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.routes: dict[str, ResolvedRoute] = {}

        def target(up: Upstream, model_name: str) -> ResolvedTarget:
            spec = next(m for m in up.models if m.name == model_name)
            secret = env.get(up.api_key_env) if up.api_key_env else None
            return ResolvedTarget(up, spec, spec.upstream_model or spec.name, f"Bearer {secret}" if secret else None)

        by_model: dict[str, list[ResolvedTarget]] = {}
        for up in config.upstreams:
            for m in up.models:
                by_model.setdefault(m.name, []).append(target(up, m.name))
        for name, found in by_model.items():
            targets = tuple(found)
            why = f"model {name!r} served directly by {_order(targets)}"
            if len(targets) > 1:
                why += " (failover in the order the upstreams are configured)"
            self.routes[name] = ResolvedRoute(name, targets, why)
        for route in config.routes:  # an alias wins over a model of the same name
            targets = tuple(target(config.upstream(t.upstream), t.model) for t in route.targets)
            why = f"alias {route.alias!r} in routes: {_order(targets)}"
            if len(targets) > 1:
                why += " (failover in the route's order)"
            if route.alias in by_model:
                why += f"; the alias wins over the model of the same name on {_order(tuple(by_model[route.alias]))}"
            self.routes[route.alias] = ResolvedRoute(route.alias, targets, why)
        # Each route's decision is built once and shared by every call that takes it.
        self._decisions = {name: r.decision for name, r in self.routes.items()}

    def decision(self, route: ResolvedRoute) -> dict[str, Any]:
        return self._decisions.get(route.name) or route.decision

    def resolve(self, model: str) -> ResolvedRoute:
        try:
            return self.routes[model]
        except KeyError:
            raise ModelNotFound(f"no route or upstream serves model {model!r}", model=model) from None

    def names(self) -> list[str]:
        return sorted(self.routes)
