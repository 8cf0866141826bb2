"""Backend endpoints per tier: least-in-flight balancing, retries, and a cool-down for endpoints
that keep failing."""

from __future__ import annotations

import time
from dataclasses import dataclass

from service.gateway.config import EndpointConfig, TierConfig


@dataclass(eq=False)
class Endpoint:
    config: EndpointConfig
    in_flight: int = 0
    consecutive_failures: int = 0
    cooling_until: float = 0.0

    @property
    def url(self) -> str:
        return self.config.base_url.rstrip("/") + "/chat/completions"


class TierPool:
    """The endpoints of one tier, in the order a request should try them."""

    def __init__(self, name: str, tier: TierConfig, failures_before_cooldown: int, cooldown_s: float) -> None:
        self.name = name
        self.model = tier.model
        self.endpoints = [Endpoint(e) for e in tier.endpoints]
        self._threshold = failures_before_cooldown
        self._cooldown = cooldown_s

    def candidates(self) -> list[Endpoint]:
        """Healthy endpoints by fewest in-flight requests; cooling ones last (better than none)."""
        now = time.monotonic()
        healthy = [e for e in self.endpoints if e.cooling_until <= now]
        cooling = [e for e in self.endpoints if e.cooling_until > now]
        return sorted(healthy, key=lambda e: e.in_flight) + sorted(cooling, key=lambda e: e.cooling_until)

    def succeeded(self, endpoint: Endpoint) -> None:
        endpoint.consecutive_failures = 0
        endpoint.cooling_until = 0.0

    def failed(self, endpoint: Endpoint) -> None:
        endpoint.consecutive_failures += 1
        if endpoint.consecutive_failures >= self._threshold:
            endpoint.cooling_until = time.monotonic() + self._cooldown
