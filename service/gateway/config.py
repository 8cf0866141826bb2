"""Gateway configuration: backends per tier, the router service, client keys and labels."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from service.config import ConfigError, check_event_loop
from service.policy.messages import ROUTE_ON

TIERS = ("strong", "weak")


@dataclass
class EndpointConfig:
    base_url: str  # an OpenAI-compatible API root, e.g. http://localhost:8000/v1
    api_key_env: str | None = None  # the key is read from this environment variable, never logged
    timeout_s: float = 60.0

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


@dataclass
class TierConfig:
    model: str  # the backend's own model name, sent upstream in place of router-...
    endpoints: list[EndpointConfig]


@dataclass
class ClientKey:
    key: str | None = None  # literal key (tests, local use) ...
    key_env: str | None = None  # ... or the environment variable holding it
    labels: dict[str, str] = field(default_factory=dict)

    def value(self) -> str | None:
        return self.key or (os.environ.get(self.key_env) if self.key_env else None)


@dataclass
class GatewayConfig:
    strong: TierConfig
    weak: TierConfig
    router_address: str = "localhost:50051"
    router_timeout_s: float = 1.0
    fallback_tier: str = "strong"  # when the router service is unavailable
    failover_to_other_tier: bool = True  # after every endpoint of the chosen tier failed
    route_on: str = "last_user"  # which message is routed
    host: str = "0.0.0.0"
    port: int = 6060
    keys: list[ClientKey] = field(default_factory=list)  # empty: no client auth
    label_headers: list[str] = field(default_factory=list)  # allowed x-lmroute-label-<name> headers
    failures_before_cooldown: int = 3
    cooldown_s: float = 30.0
    log_level: str = "info"
    event_loop: str = "auto"  # "auto" (uvloop where installed, else asyncio), "uvloop" or "asyncio"

    def tier(self, name: str) -> TierConfig:
        return self.strong if name == "strong" else self.weak

    def validate(self) -> GatewayConfig:
        if self.fallback_tier not in TIERS:
            raise ConfigError("fallback_tier must be strong or weak")
        check_event_loop(self.event_loop)
        if self.route_on not in ROUTE_ON:
            raise ConfigError(f"route_on must be one of {', '.join(ROUTE_ON)}")
        for name in TIERS:
            tier = self.tier(name)
            if not tier.model or not tier.endpoints:
                raise ConfigError(f"tiers.{name}: needs a model and at least one endpoint")
        for key in self.keys:
            if not key.value():
                raise ConfigError(f"keys: a key has no value (key_env {key.key_env!r} is unset?)")
        return self


def _tier(data: dict, name: str) -> TierConfig:
    if not isinstance(data, dict) or "model" not in data:
        raise ConfigError(f"tiers.{name}: needs model and endpoints")
    endpoints = [EndpointConfig(**e) for e in data.get("endpoints", [])]
    return TierConfig(model=data["model"], endpoints=endpoints)


def load_gateway_config(path: str | Path) -> GatewayConfig:
    try:
        data: dict[str, Any] = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    tiers = data.pop("tiers", {}) or {}
    keys = [ClientKey(**k) for k in data.pop("keys", []) or []]
    known = {f.name for f in dataclasses.fields(GatewayConfig)} - {"strong", "weak", "keys"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}")
    try:
        config = GatewayConfig(
            strong=_tier(tiers.get("strong"), "strong"),
            weak=_tier(tiers.get("weak"), "weak"),
            keys=keys,
            **data,
        )
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return config.validate()
